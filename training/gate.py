"""The promotion gate: the metric a version is judged by, and the rule that promotes it.

A pure module (metadata dicts in, a decision out, no I/O), so the command
line, the API's training workers and the store's default-version rule all
judge a version the same way. `app.core.config.Settings` takes its gate
defaults from here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# MASE is model MAE / naive last-value MAE on the same windows; above 1.0
# the model loses to "tomorrow equals today".
DEFAULT_MAX_MASE = 1.0
# Refuse a candidate whose MASE is worse than the current champion's.
DEFAULT_REQUIRE_NOT_WORSE = True
BACKTEST_BASIS = "walk-forward backtest"
TEST_SPLIT_BASIS = "test split"


def headline_mase(metadata: dict[str, Any]) -> tuple[float | None, str]:
    """The MASE a version is judged by: the walk-forward backtest's when there is one."""
    backtest = metadata.get("backtest") or {}
    summary = backtest.get("summary", {}).get("model") if isinstance(backtest, dict) else None
    if summary and summary.get("mase") is not None:
        return float(summary["mase"]), BACKTEST_BASIS
    mase = metadata.get("metrics", {}).get("model", {}).get("mase")
    return (float(mase) if mase is not None else None), TEST_SPLIT_BASIS


@dataclass(frozen=True)
class GateSettings:
    """When a new version may replace the champion."""

    max_mase: float = DEFAULT_MAX_MASE
    require_not_worse: bool = DEFAULT_REQUIRE_NOT_WORSE


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
