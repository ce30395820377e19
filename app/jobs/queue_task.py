"""What a queue worker (`python -m app.worker`) runs: the training task and the sweeper.

The task runs in one of procrastinate's worker threads and never trains
itself: it starts a training process per job (`app.jobs.training_process`),
watches it, kills it when the job is cancelled, and settles the record. The
training process dies with the queue worker (PR_SET_PDEATHSIG), so a queue
worker killed with SIGKILL leaves no training behind that could write to a
job retried elsewhere. The sweeper retries or fails the jobs of queue
workers that died. See docs/design.md, "Scaled-out jobs".
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from functools import lru_cache
from typing import Any

import procrastinate
from procrastinate import exceptions as queue_errors
from procrastinate import jobs as queue_jobs
from procrastinate.job_context import AbortReason, JobContext

from app.core.config import Settings, get_settings
from app.core.stores import model_store
from app.jobs.backend import worker_name
from app.jobs.outages import OutageTolerantRecords
from app.jobs.postgres import PostgresJobStore
from app.jobs.queue import TRAIN_TASK
from app.jobs.store import CANCELLED, FAILED, RUNNING, SUCCEEDED, JobOutcome

logger = logging.getLogger("stockcast.worker")
# How often the task looks at its training process and at abort requests.
WATCH_SECONDS = 0.2


@lru_cache
def worker_records(database_url: str, pool_size: int) -> PostgresJobStore:
    """One pool of record connections per queue worker process, shared by its task threads."""
    return PostgresJobStore(database_url, pool_size)


def records_for(settings: Settings) -> PostgresJobStore:
    """This queue worker's job records."""
    assert settings.database_url is not None  # app.worker refuses to start without one
    return worker_records(settings.database_url, settings.database_pool_size)


def build_worker_queue(settings: Settings) -> procrastinate.App:
    """The procrastinate app of a queue worker, with its pool sized by the settings and the task registered."""
    # procrastinate's pool checks each connection when it is taken, so one
    # broken by a database restart is replaced rather than handed out.
    connector = procrastinate.PsycopgConnector(
        conninfo=settings.database_url, min_size=1, max_size=settings.database_pool_size
    )
    queue = procrastinate.App(connector=connector)
    queue.task(name=TRAIN_TASK, pass_context=True)(run_training)
    return queue


def run_training(context: JobContext, job_id: str) -> None:
    """procrastinate task: run record `job_id` in a fresh training process; settle it whatever happens."""
    settings = get_settings()
    records = OutageTolerantRecords(records_for(settings), give_up_seconds=settings.job_outage_seconds)
    attempt = context.job.attempts + 1
    if attempt > settings.job_max_attempts:
        # However it came back to the queue, a job never runs more often than the setting allows.
        error = f"attempt {attempt} would exceed STOCKCAST_JOB_MAX_ATTEMPTS={settings.job_max_attempts}; not run"
        records.finish(job_id, JobOutcome(FAILED, error=error))
        logger.warning("job %s: %s", job_id, error)
        return
    if not records.mark_running(job_id, attempt, worker_name()):
        logger.info("job %s was cancelled or finished before attempt %d started", job_id, attempt)
        return
    process = multiprocessing.get_context("spawn").Process(
        target=_training_entry,
        args=(job_id, settings.model_dump(mode="json"), os.getpid(), attempt),
        name=f"stockcast-train-{job_id}",
        daemon=True,
    )
    process.start()
    logger.info("job %s attempt %d started in training process %s", job_id, attempt, process.pid)
    abort = _watch(context, records, job_id, attempt, process, settings.worker_heartbeat_seconds)
    if abort is not None:
        if abort == AbortReason.USER_REQUEST:
            records.finish(job_id, JobOutcome(CANCELLED, error="cancelled by request"), attempt=attempt)
        else:
            ended = JobOutcome(FAILED, error="the worker shut down while this job ran; submit it again")
            records.finish(job_id, ended, attempt=attempt)
        raise queue_errors.JobAborted()
    job = records.get(job_id)
    if job is None or job["status"] != RUNNING or job["attempts"] != attempt:
        return  # the training process recorded a failure or a cancellation itself
    if job["result"] is not None and process.exitcode == 0:
        records.finish(job_id, JobOutcome(SUCCEEDED), attempt=attempt)
        records.notify_models(str(job["request"]["model"]))
    else:
        error = f"the training process exited unexpectedly (exit code {process.exitcode})"
        records.finish(job_id, JobOutcome(FAILED, error=error), attempt=attempt)


def _watch(
    context: JobContext,
    records: OutageTolerantRecords,
    job_id: str,
    attempt: int,
    process: Any,
    touch_seconds: float,
) -> AbortReason | None:
    """Wait for the training process; kill it on an abort request and return the reason."""
    touched = time.monotonic()
    while True:
        process.join(timeout=WATCH_SECONDS)
        if not process.is_alive():
            return None
        reason = context.abort_reason()
        if reason is not None:
            # Nothing half-written becomes visible: versions appear by an atomic rename.
            process.kill()
            process.join()
            return reason
        if time.monotonic() - touched >= touch_seconds:
            # Keeps the record fresh while the queue worker lives, so the sweeper
            # never retries a job whose queue worker is slow or draining, not dead.
            records.touch(job_id, attempt)
            touched = time.monotonic()


def _training_entry(job_id: str, settings_values: dict[str, Any], parent_pid: int, attempt: int) -> None:
    """Imported by the spawned interpreter; kept tiny so the import is cheap."""
    from app.jobs.training_process import run_job

    run_job(job_id, settings_values, parent_pid, attempt)


# The sweeper -----------------------------------------------------------------


async def sweep(queue: procrastinate.App, settings: Settings) -> list[str]:
    """Retry or fail the jobs of queue workers that stopped sending heartbeats; one line per job it settled.

    procrastinate lists such jobs but leaves them `doing` (holding their
    model's lock) until someone acts. A job is taken only when its queue worker's
    heartbeat AND its own record are stale, so a queue worker that is draining (no
    heartbeats, still running its job) is left alone.
    """
    import asyncio

    records = records_for(settings)
    outcomes = []
    stalled = await queue.job_manager.get_stalled_jobs(
        task_name=TRAIN_TASK, seconds_since_heartbeat=settings.worker_stalled_seconds
    )
    for job in stalled:
        assert job.id is not None  # read from the database
        record = await asyncio.to_thread(records.claim_stalled, job.id, settings.worker_stalled_seconds)
        if record is None:
            continue
        outcome = await _settle_stalled(queue, records, settings, job, record)
        logger.warning("job %s: %s", record["id"], outcome)
        outcomes.append(f"{record['id']}: {outcome}")
    return outcomes


async def _settle_stalled(
    queue: procrastinate.App,
    records: PostgresJobStore,
    settings: Settings,
    job: queue_jobs.Job,
    record: dict[str, Any],
) -> str:
    import asyncio

    job_id, attempt, model = str(record["id"]), int(record["attempts"]), str(record["request"]["model"])
    lost = (
        f"attempt {attempt} of {settings.job_max_attempts} stopped: its worker {record['worker']} sent no heartbeat "
        f"for {settings.worker_stalled_seconds:g} s (killed, or cut off from the database)"
    )
    version = await asyncio.to_thread(_version_made_by, settings, model, job_id)
    if version is not None:
        # The version was saved before the queue worker died: the job did its work.
        recovered = JobOutcome(SUCCEEDED, result={"model": model, "version": version, "recovered": True})
        await asyncio.to_thread(records.finish, job_id, recovered, attempt)
        await queue.job_manager.finish_job(job=job, status=queue_jobs.Status.SUCCEEDED, delete_job=False)
        await asyncio.to_thread(records.notify_models, model)
        return f"{lost}; it had saved version {version}, so it succeeded"
    if record["cancel_requested"]:
        await asyncio.to_thread(records.finish, job_id, JobOutcome(CANCELLED, error="cancelled by request"), attempt)
        await queue.job_manager.finish_job(job=job, status=queue_jobs.Status.ABORTED, delete_job=False)
        return f"{lost}; it was being cancelled, so it is cancelled"
    if attempt < settings.job_max_attempts:
        reason = f"{lost}; retrying: attempt {attempt + 1} of {settings.job_max_attempts} is queued"
        if not await asyncio.to_thread(records.requeue, job_id, attempt, reason):
            return "moved on meanwhile"
        try:
            await queue.job_manager.retry_job(job)
            return reason
        except (queue_errors.UniqueViolation, queue_errors.AlreadyEnqueued):
            # A newer job of the same model waits under the queueing lock;
            # retrying this one would hit the unique key. That one will run.
            waiting = await asyncio.to_thread(records.waiting_for, model, job_id)
            error = f"{lost}; not retried: a newer job of model '{model}' ({waiting}) waits and supersedes it"
            await asyncio.to_thread(records.finish, job_id, JobOutcome(FAILED, error=error), attempt)
            await queue.job_manager.finish_job(job=job, status=queue_jobs.Status.FAILED, delete_job=False)
            return error
    error = f"{lost}; no attempts left, no version was saved. Submit it again"
    await asyncio.to_thread(records.finish, job_id, JobOutcome(FAILED, error=error), attempt)
    await queue.job_manager.finish_job(job=job, status=queue_jobs.Status.FAILED, delete_job=False)
    return error


def _version_made_by(settings: Settings, model: str, job_id: str) -> int | None:
    """The version a job saved before its record could say so, if any."""
    return model_store(settings).version_of_job(model, job_id)
