"""Train a version, backtest it, store it, and decide whether it becomes champion.

This is the one entry point that the command line and the API's training
workers share, so both apply the same promotion gate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from training.data import CleanResult
from training.pipeline import EpochCallback, StopCheck, TrainConfig, TrainOutcome, train_version
from training.store import CHAMPION, ModelStore, headline_mase

# on_fold(done, total, fold_report) after each walk-forward fold.
FoldCallback = Callable[[int, int, dict[str, Any]], None]


@dataclass(frozen=True)
class GateSettings:
    """When a new version may replace the champion."""

    # MASE is model MAE / naive last-value MAE on the same windows; above 1.0
    # the model loses to "tomorrow equals today".
    max_mase: float = 1.0
    # Refuse a candidate whose MASE is worse than the current champion's.
    require_not_worse: bool = True


@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict on one version, recorded in its job and alias log."""

    promoted: bool
    reason: str
    candidate_mase: float | None
    champion_version: int | None
    champion_mase: float | None
    basis: str

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form for job records and API responses."""
        return asdict(self)


def decide(candidate: dict[str, Any], champion: dict[str, Any] | None, gate: GateSettings) -> GateDecision:
    """Pure gate rule: pass the MASE ceiling, and do not lose to the champion."""
    candidate_mase, basis = headline_mase(candidate)
    champion_mase = headline_mase(champion)[0] if champion is not None else None
    champion_version = int(champion["version"]) if champion is not None else None

    def verdict(promoted: bool, reason: str) -> GateDecision:
        return GateDecision(promoted, reason, candidate_mase, champion_version, champion_mase, basis)

    if candidate_mase is None:
        return verdict(False, "no MASE could be computed for the candidate")
    if candidate_mase > gate.max_mase:
        return verdict(
            False,
            f"MASE {candidate_mase:.4f} on the {basis} is above the gate's {gate.max_mase:.4f}: "
            "the model does not beat the naive last-value forecast",
        )
    if gate.require_not_worse and champion_mase is not None and candidate_mase > champion_mase:
        return verdict(
            False,
            f"MASE {candidate_mase:.4f} is worse than champion v{champion_version}'s {champion_mase:.4f}",
        )
    return verdict(True, f"MASE {candidate_mase:.4f} on the {basis} passes the gate")


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
    champion_version = store.aliases(name).get(CHAMPION)
    champion = store.read_metadata(name, champion_version) if champion_version is not None else None
    decision = decide(outcome.metadata, champion, gate)
    if decision.promoted:
        store.set_alias(name, CHAMPION, outcome.version, reason=f"promoted by gate: {decision.reason}")
    return outcome, decision
