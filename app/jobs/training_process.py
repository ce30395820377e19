"""The training process: one spawned interpreter per training job, in both job modes.

`run_job` is its entry; the embedded mode's `local_runner` and the queue
worker's `queue_task` start it. TensorFlow is not fork-safe and training
would stall /predict, so each job runs in a fresh interpreter started with
`spawn`. It dies with the process that started it (PR_SET_PDEATHSIG), so a
killed parent leaves no orphaned training behind. Every outcome ends in a
final job status. See docs/design.md, "Training jobs".
"""

from __future__ import annotations

import os
from typing import Any

from app.core.process import (
    describe_error,
    die_with_parent,
    name_process,
    remove_private_temp_dir,
    use_private_temp_dir,
)
from app.jobs.outages import OutageTolerantRecords
from app.jobs.store import CANCELLED, FAILED, RUNNING, JobOutcome, JobStore

# What `ps` shows for a training process.
TRAINING_PROCESS_NAME = "stockcast-train"


class JobCancelledError(Exception):
    """Raised from the epoch callback to abandon a cancelled job before it saves."""


def summarise(outcome_metadata: dict[str, Any]) -> dict[str, Any]:
    """Headline figures of a new version for the job record."""
    metrics = outcome_metadata.get("metrics", {})
    headline = {
        source: {key: value for key, value in figures.items() if key != "per_step"}
        for source, figures in metrics.items()
    }
    backtest = outcome_metadata.get("backtest") or {}
    return {
        "metrics": headline,
        "backtest": {
            source: {key: value for key, value in figures.items() if key != "per_step"}
            for source, figures in backtest.get("summary", {}).items()
        }
        or None,
        "epochs_run": outcome_metadata.get("epochs_run"),
        "training_seconds": outcome_metadata.get("training_seconds"),
    }


def saved_earlier(model: str, version: int) -> dict[str, Any]:
    """The result of a job whose version an earlier attempt saved."""
    return {"model": model, "version": version, "recovered": True}


def open_records(settings: Any) -> OutageTolerantRecords:
    """The job records of the mode the settings choose (SQLite, or PostgreSQL), riding out a database outage."""
    if settings.database_url:
        from app.jobs.postgres import PostgresJobStore

        # Short waits: an outage is found out in seconds, and OutageTolerantRecords decides what waits longer.
        records: Any = PostgresJobStore(settings.database_url, pool_size=1, wait_seconds=2, reconnect_seconds=2)
    else:
        records = JobStore(settings.jobs_db)
    return OutageTolerantRecords(records, give_up_seconds=settings.job_outage_seconds)


def run_job(job_id: str, settings_values: dict[str, Any], parent_pid: int, attempt: int | None = None) -> None:
    """Train the job's model; every outcome ends in a final job status.

    `attempt` (scaled-out mode) tags every write: once the job was retried
    elsewhere, writes from this run change nothing.
    """
    die_with_parent()
    name_process(TRAINING_PROCESS_NAME)
    if os.getppid() != parent_pid:
        # The parent died between spawning us and the prctl call above.
        return

    from app.core.config import Settings

    settings = Settings(**settings_values)
    jobs = open_records(settings)
    job = jobs.get(job_id)
    if job is None or job["status"] != RUNNING or (attempt is not None and job.get("attempts") != attempt):
        return
    temp_dir = settings.temp_dir / f"job-{job_id}"
    use_private_temp_dir(temp_dir)
    try:
        # The local runner (or the queue task) marks the job succeeded once it is served.
        jobs.set_result(job_id, _train(job_id, job["request"], settings, jobs, parent_pid, attempt), attempt=attempt)
    except JobCancelledError:
        cancelled = JobOutcome(CANCELLED, error="cancelled by request before the model was saved")
        jobs.finish(job_id, cancelled, attempt=attempt)
    except Exception as error:  # every failure must end the job with its reason
        jobs.finish(job_id, JobOutcome(FAILED, error=describe_error(error)), attempt=attempt)
    finally:
        remove_private_temp_dir(temp_dir)


def _train(
    job_id: str, request: dict[str, Any], settings: Any, jobs: Any, parent_pid: int, attempt: int | None
) -> dict[str, Any]:
    from training.threads import limit_training_resources

    limit_training_resources(settings.training_threads, settings.training_niceness)

    import time

    from app.core.stores import model_store
    from app.datasets.remote import open_datasets
    from training.config import TrainConfig
    from training.data import CleaningSettings, load_prices
    from training.files import sha256_of
    from training.fitting import Progress, TrainingRun
    from training.gate import GateSettings
    from training.promotion import train_and_promote
    from training.store import JobVersionExistsError

    store = model_store(settings)
    earlier = store.version_of_job(request["model"], job_id)
    if earlier is not None:
        # An earlier attempt of this job saved its version before its record could say so.
        return saved_earlier(request["model"], earlier)
    datasets = open_datasets(settings)
    path = datasets.csv_path(request["dataset"])
    store.check_writable(request["model"])
    config_fields = {key: value for key, value in request.items() if key not in ("model", "dataset")}
    config = TrainConfig(**config_fields)
    # The outlier rule is fitted on the split's training rows, whatever the fractions.
    cleaning = CleaningSettings(outlier_fit_fraction=1 - config.validation_fraction - config.test_fraction)
    clean = load_prices(path, required=tuple(dict.fromkeys((*config.features, config.label))), settings=cleaning)
    started = time.monotonic()
    # One record that grows: the last epoch's figures stay visible during the backtest.
    progress: dict[str, Any] = {}

    def should_stop() -> bool:
        if os.getppid() != parent_pid:
            os._exit(1)  # the parent is gone; nobody will read what we produce
        if jobs.cancel_requested(job_id):
            raise JobCancelledError()
        return False

    def record(**fields: Any) -> None:
        should_stop()
        progress.update(fields, elapsed_seconds=round(time.monotonic() - started, 2))
        jobs.set_progress(job_id, progress, attempt=attempt)

    def on_epoch(epoch: int, epochs: int, logs: dict[str, float]) -> None:
        record(stage="training", epoch=epoch, epochs=epochs, loss=logs.get("loss"), val_loss=logs.get("val_loss"))

    def on_fold(done: int, total: int, report: dict[str, Any]) -> None:
        ratio = report.get("model", {}).get("mae_ratio_to_naive")
        record(stage="backtest", fold=done, folds=total, fold_ratio_to_naive=ratio)

    # The dataset by name and hash: a server path means nothing to a client and tells it too much.
    source = {"name": f"{request['dataset']}.csv", "dataset": request["dataset"], "sha256": sha256_of(path)}
    source["job_id"] = job_id
    gate = GateSettings(
        significance_level=settings.gate_significance_level,
        compare_with_champion=settings.gate_compare_with_champion,
        spend_over_attempts=settings.gate_spend_over_attempts,
    )
    run = TrainingRun(name=request["model"], clean=clean, source=source, config=config)
    hooks = Progress(on_epoch=on_epoch, on_fold=on_fold, should_stop=should_stop)
    try:
        outcome, decision = train_and_promote(run, store, hooks, gate=gate)
    except JobVersionExistsError as existing:
        # Another attempt of this job (retried while this one was cut off) saved first: one version per job.
        return saved_earlier(request["model"], existing.version)
    return {
        "model": request["model"],
        "version": outcome.version,
        "promoted": decision.promoted,
        "gate": decision.to_json(),
        **summarise(outcome.metadata),
    }


__all__ = ["run_job"]
