"""Train a version, backtest it, store it, and decide whether it becomes champion.

This is the one entry point that the command line and the API's training
workers share, so both apply the same promotion gate.
"""

from __future__ import annotations

import logging
from typing import Any

from training.backtest import FoldCallback
from training.config import TrainConfig
from training.data import CleanResult
from training.gate import GateDecision, GateSettings, decide
from training.pipeline import EpochCallback, StopCheck, TrainOutcome, train_version
from training.store import CHAMPION, ModelStore

logger = logging.getLogger("stockcast.training")


def train_and_promote(
    clean: CleanResult,
    config: TrainConfig,
    store: ModelStore,
    name: str,
    source: dict[str, Any],
    on_epoch: EpochCallback | None = None,
    should_stop: StopCheck | None = None,
    gate: GateSettings = GateSettings(),
    on_fold: FoldCallback | None = None,
) -> tuple[TrainOutcome, GateDecision]:
    """Train and store a version (with its backtest), then promote it if the gate allows."""

    def add_backtest(metadata: dict[str, Any]) -> dict[str, Any]:
        if config.backtest_folds > 0:
            from training.backtest import run_backtest

            metadata["backtest"] = run_backtest(clean.frame, config, should_stop=should_stop, on_fold=on_fold)
        return metadata

    outcome = train_version(
        clean, config, store, name, source, on_epoch=on_epoch, should_stop=should_stop, after_fit=add_backtest
    )
    _write_report(store, name, outcome.version, clean)
    # Read the champion and move it under one lock: another job of this model
    # (another worker, another machine on the shared store) cannot slip in between.
    with store.alias_lock(name):
        champion_version = store.aliases(name).get(CHAMPION)
        champion = store.read_metadata(name, champion_version) if champion_version is not None else None
        decision = decide(outcome.metadata, champion, gate)
        if decision.promoted:
            store.set_alias(name, CHAMPION, outcome.version, reason=f"promoted by gate: {decision.reason}")
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
