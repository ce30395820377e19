"""Training, backtesting and promoting a version: the one entry the command line and jobs share.

`train_and_promote` trains and stores a version (`training.fitting`), runs
its walk-forward backtest, draws its report, and moves `champion` to it
when the promotion gate (`training.gate`) allows, under the model's alias
lock, where it also reads and extends the model's attempt ledger. Both
callers go through it, so both apply the same gate.
See docs/design.md, "Promotion gate and the default version".
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import numpy as np

from training.config import TrainConfig
from training.data import CleanResult, fit_calendar
from training.files import now_iso
from training.fitting import Progress, TrainingRun, TrainOutcome, train_version
from training.gate import GateDecision, GateSettings, attempt_entry, decide, skill_of
from training.store import CHALLENGER, CHAMPION, ModelStore

logger = logging.getLogger("stockcast.training")


def train_and_promote(
    run: TrainingRun,
    store: ModelStore,
    progress: Progress = Progress(),
    gate: GateSettings = GateSettings(),
) -> tuple[TrainOutcome, GateDecision]:
    """Train and store a version (with its backtest and its skill), then promote it if the gate allows."""
    # Every step below (the backtest, the report) sees the rows the calendar keeps.
    run = replace(run, clean=fit_calendar(run.clean, run.config.calendar))
    forecasts: dict[str, np.ndarray] = {}

    def add_backtest(metadata: dict[str, Any]) -> dict[str, Any]:
        if run.config.backtest_folds > 0:
            from training.backtest import walk_forward

            backtest = walk_forward(
                run.clean.frame,
                run.config,
                should_stop=progress.should_stop,
                on_fold=progress.on_fold,
                significance_level=gate.significance_level,
            )
            metadata["backtest"] = backtest.report
            forecasts.update(backtest.forecasts)
        metadata["skill"] = skill_of(metadata, gate.significance_level)
        return metadata

    def rescore(champion_metadata: dict[str, Any]) -> np.ndarray:
        # The champion's configuration refitted on the candidate's folds: the
        # same data, the same windows, so the comparison is paired.
        from training.backtest import walk_forward

        champion_config = TrainConfig.from_hyperparameters(champion_metadata["hyperparameters"])
        same_folds = champion_config.with_backtest_of(run.config)
        return walk_forward(run.clean.frame, same_folds, should_stop=progress.should_stop).forecasts["model"]

    outcome = train_version(run, store, progress, after_fit=add_backtest)
    try:
        _write_report(store, run.name, outcome.version, run.clean)
        # Read the champion and move it under one lock: another job of this model
        # (another training process, or another machine on the shared store)
        # cannot slip in between.
        with store.alias_lock(run.name):
            champion_version = store.aliases(run.name).get(CHAMPION)
            champion = store.read_metadata(run.name, champion_version) if champion_version is not None else None
            # Earlier decisions on overlapping evaluation periods set this attempt's level; this one joins them.
            earlier = store.attempts(run.name)
            decision = decide(outcome.metadata, champion, gate, forecasts or None, rescore, earlier)
            job_id = (outcome.metadata.get("data") or {}).get("job_id")
            store.record_attempt(run.name, attempt_entry(decision, outcome.version, now_iso(), job_id))
            if decision.promoted:
                store.set_alias(run.name, CHAMPION, outcome.version, reason=f"promoted by gate: {decision.reason}")
            elif decision.evidence.get("challenger"):
                # The newest such candidate shadows the champion until live evidence decides (docs/ledger.md).
                store.set_alias(run.name, CHALLENGER, outcome.version, reason=f"challenger: {decision.reason}")
    except BaseException:
        # The job fails, so its version must not stay (it could become the default while unpromoted).
        store.discard_version(run.name, outcome.version)
        raise
    return outcome, decision


def _write_report(store: ModelStore, name: str, version: int, clean: CleanResult) -> None:
    """Draw the version report now, while the data is in memory: the API serves this file.

    A version whose drawing failed is still a good version; the API draws
    the report later (in a child process) if this file is missing.
    """
    from training.version_report import write_version_report

    try:
        write_version_report(store, name, version, frame=clean.frame)
    except Exception:
        logger.exception(
            "%s v%s: the version report was not drawn; it will be drawn when first asked for", name, version
        )
