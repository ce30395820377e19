"""The promotion gate: a version becomes champion only on statistical evidence of skill.

On its walk-forward backtest, a candidate is promoted when (1) one-sided DM tests reject "no better than
naive" at step 1 and pooled over steps (a tie is no skill); (2) its pooled MAE is not worse than the
mean-return drift's; (3) its 0.9 band's step-1 coverage is within the binomial tolerance; (4) a paired DM
test on its folds rejects "no better than the champion" (same dataset and horizon, re-scored there): a
tie keeps the champion. Every decision goes to the model's attempt ledger; the k-th attempt on an
evaluation period overlapping earlier ones is judged at alpha / (k (k + 1)), so retries never spend
more than alpha in all. A candidate that meets (1) at the nominal level but not at the level spent, or
ties the champion in (4), with (2) and (3) met, is marked `challenger`: it shadows the champion on live
forecasts (docs/ledger.md, "Shadow challenger"). See docs/design.md, "Promotion gate and the default version".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from training import significance

# Re-scores a champion's configuration on the candidate's folds; returns its
# pooled out-of-sample forecasts (windows, horizon) on the same windows.
Rescore = Callable[[dict[str, Any]], np.ndarray]

# One-sided level of the DM tests and of the binomial coverage check.
DEFAULT_SIGNIFICANCE_LEVEL = 0.05
# A candidate must beat the champion re-scored on the same folds (paired DM); a tie keeps the champion.
DEFAULT_COMPARE_WITH_CHAMPION = True
# Spend the level over repeated attempts on overlapping evaluation periods (attempt_level).
DEFAULT_SPEND_OVER_ATTEMPTS = True
SPENDING_RULE = "alpha / (k (k + 1)) for the k-th attempt on an overlapping evaluation period"
BACKTEST_BASIS = "walk-forward backtest"
TEST_SPLIT_BASIS = "test split"


def _ratio(figures: dict[str, Any]) -> float | None:
    # Metadata written before the rename called the MAE ratio to naive "mase".
    value = figures.get("mae_ratio_to_naive", figures.get("mase") if "mae_ratio_to_naive" not in figures else None)
    return float(value) if value is not None else None


def headline_ratio(metadata: dict[str, Any]) -> tuple[float | None, str]:
    """The MAE ratio to naive a version is ranked by: the walk-forward backtest's when there is one."""
    backtest = metadata.get("backtest") or {}
    summary = backtest.get("summary", {}).get("model") if isinstance(backtest, dict) else None
    if summary and _ratio(summary) is not None:
        return _ratio(summary), BACKTEST_BASIS
    return _ratio(metadata.get("metrics", {}).get("model", {})), TEST_SPLIT_BASIS


@dataclass(frozen=True)
class GateSettings:
    """When a new version may replace the champion."""

    # One-sided level of every test: DM against naive (step 1 and pooled) and
    # the binomial coverage check.
    significance_level: float = DEFAULT_SIGNIFICANCE_LEVEL
    # Promote over a champion only when a paired DM test on the candidate's
    # folds (the champion re-scored on them) says the candidate is better.
    compare_with_champion: bool = DEFAULT_COMPARE_WITH_CHAMPION
    # Judge the k-th attempt on an overlapping evaluation period at attempt_level(level, k).
    spend_over_attempts: bool = DEFAULT_SPEND_OVER_ATTEMPTS


def attempt_level(level: float, attempt: int) -> float:
    """The level the `attempt`-th attempt on an evaluation period is judged at: level / (k (k + 1)).

    The k-th attempt spends level/k - level/(k+1), so attempts 1..k spend
    level * k / (k + 1) together and no number of attempts spends more than
    `level`. By the union bound the chance that any attempt on one period
    promotes a model without skill is then at most `level`, whatever the
    dependence between attempts (retrains on the same data are strongly
    dependent). Bonferroni's level/k would spend level * (1 + 1/2 + ... + 1/k),
    which grows without bound; Holm needs the number of attempts in advance.
    """
    if attempt < 1:
        raise ValueError(f"attempts are counted from 1, got {attempt}")
    return level / (attempt * (attempt + 1))


def overlapping_attempts(earlier: Sequence[dict[str, Any]], period: dict[str, Any]) -> list[dict[str, Any]]:
    """The earlier attempts (attempt-ledger entries) whose evaluation period shares a day with `period`."""
    start, end = period.get("start"), period.get("end")
    if not start or not end:
        return []
    found = []
    for entry in earlier:
        other = entry.get("period") or {}
        if other.get("start") and other.get("end") and other["start"] <= end and start <= other["end"]:
            found.append(entry)
    return found


@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict on one version, recorded in its job and alias log."""

    promoted: bool
    reason: str
    ratio_to_naive: float | None
    champion_version: int | None
    champion_ratio_to_naive: float | None
    basis: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form for job records and API responses."""
        return asdict(self)


def skill_of(metadata: dict[str, Any], level: float) -> dict[str, Any]:
    """A version's own evidence of skill against naive and drift (no champion involved).

    What every /predict answer carries as `skill`, and the first half of the gate.
    """
    backtest = metadata.get("backtest") or {}
    evidence = backtest.get("evidence") or {}
    summary = (backtest.get("summary") or {}).get("model") or {}
    trained_through = metadata.get("trained_through")
    if not evidence:
        return {
            "beats_naive": False,
            "ratio_to_naive": summary.get("mae_ratio_to_naive"),
            "p_value": None,
            "basis": "no walk-forward backtest: no evidence of skill",
            "trained_through": trained_through,
        }
    step_1, pooled = evidence["vs_naive_step_1"], evidence["vs_naive_pooled"]
    beats = step_1["p_value"] < level and pooled["p_value"] < level
    return {
        "beats_naive": bool(beats),
        "ratio_to_naive": summary.get("mae_ratio_to_naive"),
        "p_value": max(step_1["p_value"], pooled["p_value"]),
        "basis": f"walk-forward backtest, {pooled['windows']} windows, Diebold-Mariano vs naive at step 1 and "
        f"pooled (larger p-value shown), level {level}",
        "trained_through": trained_through,
    }


def attempt_entry(decision: GateDecision, version: int, at: str, job_id: str | None = None) -> dict[str, Any]:
    """The attempt ledger's line for a decision: the version, the verdict, and its record (the dataset's sha256,
    the evaluation period, the attempt count, the level, every statistic and p-value)."""
    return {
        "at": at,
        "version": version,
        "job_id": job_id,
        "promoted": decision.promoted,
        "reason": decision.reason,
        **decision.evidence,
    }


def backtest_holds(metadata: dict[str, Any], level: float) -> bool:
    """Whether a version's own backtest evidence meets the gate's criteria at `level` (no champion involved)."""
    evidence = (metadata.get("backtest") or {}).get("evidence") or {}
    return bool(evidence) and bool(skill_of(metadata, level)["beats_naive"]) and _criteria_hold(evidence)


def _criteria_hold(evidence: dict[str, Any]) -> bool:
    """The gate's criteria besides the DM tests against naive: not worse than drift, the 90 % band covers."""
    coverage = evidence.get("coverage_90")
    return bool(evidence["mae"]["model"] <= evidence["mae"]["drift"] and coverage is not None and coverage["within"])


def _ratio_text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _fmt(test: dict[str, Any]) -> str:
    statistic = "n/a" if test["statistic"] is None else f"{test['statistic']:.3f}"
    return f"DM {statistic}, p {test['p_value']:.4f}"


def decide(
    candidate: dict[str, Any],
    champion: dict[str, Any] | None,
    gate: GateSettings,
    candidate_forecasts: dict[str, np.ndarray] | None = None,
    rescore: Rescore | None = None,
    attempts: Sequence[dict[str, Any]] = (),
) -> GateDecision:
    """The gate rule (module docstring) for a candidate's metadata and the champion's, if any.

    `attempts` is the model's attempt ledger so far: the earlier ones on an
    overlapping evaluation period set this attempt's number and its level.
    """
    nominal = gate.significance_level
    backtest = candidate.get("backtest") or {}
    evidence = dict(backtest.get("evidence") or {})
    protocol = backtest.get("protocol") or {}
    ratio = ((backtest.get("summary") or {}).get("model") or {}).get("mae_ratio_to_naive")
    period = {"start": protocol.get("test_start"), "end": protocol.get("test_end")}
    earlier = overlapping_attempts(attempts, period)
    attempt = len(earlier) + 1
    level = attempt_level(nominal, attempt) if gate.spend_over_attempts else nominal
    record: dict[str, Any] = {
        "dataset_sha256": (candidate.get("data") or {}).get("sha256"),
        "period": period,
        "horizon": candidate.get("horizon"),
        "significance_level": level,
        "nominal_level": nominal,
        "attempt": attempt,
        "earlier_versions": [entry.get("version") for entry in earlier],
        "spending": SPENDING_RULE if gate.spend_over_attempts else "none: every attempt at the nominal level",
        **{key: evidence.get(key) for key in ("vs_naive_step_1", "vs_naive_pooled", "vs_drift_pooled", "coverage_90")},
    }
    needs = f"needs p < {level:.4g}" + (f", the level of attempt {attempt}" if gate.spend_over_attempts else "")
    champion_version = int(champion["version"]) if champion is not None else None

    def verdict(promoted: bool, reason: str, champion_ratio: float | None = None) -> GateDecision:
        return GateDecision(promoted, reason, ratio, champion_version, champion_ratio, "walk-forward backtest", record)

    if not evidence:
        return verdict(False, "no walk-forward backtest: there is no out-of-sample evidence of skill to promote on")
    step_1, pooled, drift = evidence["vs_naive_step_1"], evidence["vs_naive_pooled"], evidence["vs_drift_pooled"]
    # Skill at the nominal level with the other criteria met, but not enough evidence at the level spent (or a
    # tie with the champion): a shadow challenger, whose live forecasts are the evidence retries cannot buy.
    record["challenger"] = bool(
        step_1["p_value"] < nominal and pooled["p_value"] < nominal and _criteria_hold(evidence)
    ) and not (step_1["p_value"] < level and pooled["p_value"] < level)
    if not step_1["p_value"] < level:
        return verdict(
            False,
            f"no evidence of skill at step 1: {_fmt(step_1)} against naive ({needs}); "
            "the model does not beat the naive last-value forecast",
        )
    if not pooled["p_value"] < level:
        return verdict(
            False,
            f"no evidence of skill pooled over steps: {_fmt(pooled)} against naive ({needs})",
        )
    mae = evidence["mae"]
    if mae["model"] > mae["drift"]:
        return verdict(
            False,
            f"worse than the mean-return drift baseline: MAE {mae['model']:.4f} > {mae['drift']:.4f} "
            f"({_fmt(drift)} against drift)",
        )
    coverage = evidence.get("coverage_90")
    if coverage is None or not coverage["within"]:
        measured = "none" if coverage is None else f"{coverage['coverage']:.3f} of {coverage['windows']} windows"
        tolerance = "" if coverage is None else f" (tolerance {coverage['low']:.3f}-{coverage['high']:.3f})"
        return verdict(False, f"90 % interval coverage {measured} is not within the binomial tolerance{tolerance}")
    passed = (
        f"{_fmt(step_1)} at step 1 and {_fmt(pooled)} pooled against naive at level {level:.4g}"
        + (f" (attempt {attempt})" if gate.spend_over_attempts else "")
        + f"; MAE ratio to naive {ratio:.4f}"
    )
    if champion is None or not gate.compare_with_champion:
        return verdict(True, f"beats naive with evidence: {passed}")
    same_data = (champion.get("data") or {}).get("sha256") == record["dataset_sha256"] and record["dataset_sha256"]
    if not same_data or champion.get("horizon") != candidate.get("horizon"):
        record["champion"] = "not compared: trained on another dataset or horizon"
        return verdict(
            True,
            f"beats naive with evidence: {passed}; champion v{champion_version} not compared "
            "(another dataset or horizon)",
        )
    if candidate_forecasts is None or rescore is None:
        return verdict(False, "the champion could not be re-scored on the candidate's folds")
    champion_forecast = rescore(champion)
    actual = candidate_forecasts["actual"]
    candidate_loss = np.abs(candidate_forecasts["model"] - actual).mean(axis=1)
    champion_loss = np.abs(champion_forecast - actual).mean(axis=1)
    naive_mae = float(np.abs(candidate_forecasts["naive"] - actual).mean())
    champion_ratio = float(champion_loss.mean() / naive_mae) if naive_mae > 0 else None
    # The same windows, so the test is paired: one-sided, "no better than the champion" is the null.
    paired = significance.diebold_mariano(candidate_loss, champion_loss, int(candidate.get("horizon") or 1))
    record["vs_champion_pooled"] = {**paired, "champion_version": champion_version, "level": level}
    figures = f"MAE ratio to naive {ratio:.4f} vs {_ratio_text(champion_ratio)}, {_fmt(paired)}"
    if not paired["p_value"] < level:
        # A tie, not a loss: the candidate's mean loss on these folds is the lower one.
        record["challenger"] = bool(paired["p_value"] < 0.5)
        return verdict(
            False,
            f"no evidence of beating champion v{champion_version} re-scored on the same folds ({figures}; {needs}):"
            " a tie keeps the champion",
            champion_ratio,
        )
    return verdict(
        True,
        f"beats naive with evidence: {passed}; beats champion v{champion_version} re-scored on the same folds"
        f" ({figures})",
        champion_ratio,
    )
