"""The promotion gate: a version becomes champion only on statistical evidence of skill.

On its walk-forward backtest, a candidate is promoted when (1) one-sided DM tests on |log error| reject
"no better than naive" at step 1 and pooled over steps, and "no better than the mean-return drift" pooled
(a tie is no skill); (2) its 0.9 band covers as it is served (`training.coverage_check`: path bands on
path coverage, per-step bands on every step with Holm); (3) a paired DM test on its folds rejects "no
better than the champion" (same dataset, horizon, label and window, re-scored there): a tie keeps the
champion; a champion that is not like for like is reported "not comparable" and (1)-(2) decide. Ridge is
tested and reported beside, never gating.

The tests of (1) form an intersection-union test: the claim "beats naive and drift" holds only when
every one of them rejects at the level, and the chance that all reject when any one null is true is at
most that null's own size, so no multiplicity correction is needed. Every decision goes to the model's
attempt ledger; the k-th attempt on an evaluation period overlapping earlier ones is judged at
alpha / (k (k + 1)) (every test of that attempt at that level), so retries never spend more than alpha
in all. A candidate that meets (1) at the nominal level but not at the level spent, or ties the
champion in (3), with (2) met, is marked `challenger`: it shadows the champion on live forecasts
(docs/ledger.md, "Shadow challenger"). The decision reports the minimum detectable effect: the edge in
mean |log error| over naive it would have found with 80 % power. See docs/design.md, "Promotion gate
and the default version".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from training import significance
from training.evidence import GATING, log_errors

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


# The power the minimum detectable effect is computed for.
DETECTION_POWER = 0.8


def _ratio(figures: dict[str, Any]) -> float | None:
    # Metadata written before the rename called the MAE ratio to naive "mase".
    value = figures.get("mae_ratio_to_naive", figures.get("mase") if "mae_ratio_to_naive" not in figures else None)
    return float(value) if value is not None else None


def headline_ratio(metadata: dict[str, Any]) -> tuple[float | None, str]:
    """The ratio to naive a version is ranked by: the backtest's mean |log error| ratio when there is one.

    Versions backtested before the scale-free loss fall back to the MAE ratio
    (price units), and versions without a backtest to the test split's.
    """
    backtest = metadata.get("backtest") or {}
    evidence = (backtest.get("evidence") or {}) if isinstance(backtest, dict) else {}
    if evidence.get("ratio_to_naive") is not None:
        return float(evidence["ratio_to_naive"]), BACKTEST_BASIS
    summary = backtest.get("summary", {}).get("model") if isinstance(backtest, dict) else None
    if summary and _ratio(summary) is not None:
        return _ratio(summary), BACKTEST_BASIS
    model = metadata.get("metrics", {}).get("model", {})
    if model.get("log_mae_ratio_to_naive") is not None:
        return float(model["log_mae_ratio_to_naive"]), TEST_SPLIT_BASIS
    return _ratio(model), TEST_SPLIT_BASIS


def minimum_detectable(evidence: dict[str, Any], level: float) -> dict[str, Any] | None:
    """The smallest edge in mean |log error| over naive the pooled DM test finds with 80 % power at `level`.

    Also as a share of naive's own mean |log error| (`relative`): a model whose
    loss is below naive's by less than that share would most likely not be found.
    """
    pooled = evidence.get("vs_naive_pooled") or {}
    effect = significance.minimum_detectable_effect(
        pooled.get("standard_error"), int(pooled.get("windows") or 0), level, DETECTION_POWER
    )
    if effect is None:
        return None
    naive = (evidence.get("log_loss") or {}).get("naive")
    return {
        "mean_abs_log_error": effect,
        "relative": effect / naive if naive else None,
        "power": DETECTION_POWER,
        "level": level,
        "windows": pooled.get("windows"),
    }


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


def _p_value(evidence: dict[str, Any], test: str) -> float:
    return float((evidence.get(test) or {}).get("p_value", 1.0))


def _procedure(backtest: dict[str, Any]) -> str:
    """What the backtest scored, for `basis`: the served procedure, or (older versions) the early-stopped networks."""
    procedure = str((backtest.get("protocol") or {}).get("procedure") or "")
    if procedure.startswith("the production procedure"):
        return " of the served procedure (each fold's network refitted on every row before its cut)"
    return " of the early-stopped networks" if procedure else ""


def skill_of(metadata: dict[str, Any], level: float) -> dict[str, Any]:
    """A version's own evidence of skill against naive and drift, and its band's coverage (no champion involved).

    What every answer's evidence starts from (the serving layer adds the
    gate's verdict and how the version came to be served), and the first half
    of the gate. `beats_naive` here is the DM tests' finding at `level`; an
    answer shows it only for a version the gate promoted.
    """
    backtest = metadata.get("backtest") or {}
    evidence = backtest.get("evidence") or {}
    summary = (backtest.get("summary") or {}).get("model") or {}
    trained_through = metadata.get("trained_through")
    if not evidence:
        return {
            "beats_naive": False,
            "beats_drift": False,
            "coverage_ok": None,
            "ratio_to_naive": summary.get("mae_ratio_to_naive"),
            "ratio_to_naive_price": summary.get("mae_ratio_to_naive"),
            "p_value": None,
            "p_value_drift": None,
            "minimum_detectable_effect": None,
            "basis": "no walk-forward backtest: no evidence of skill",
            "trained_through": trained_through,
        }
    step_1, pooled = _p_value(evidence, "vs_naive_step_1"), _p_value(evidence, "vs_naive_pooled")
    coverage = evidence.get("coverage_90")
    detectable = minimum_detectable(evidence, level)
    windows = (evidence.get("vs_naive_pooled") or {}).get("windows")
    ratio, _basis = headline_ratio(metadata)
    return {
        "beats_naive": bool(step_1 < level and pooled < level),
        "beats_drift": bool(_p_value(evidence, "vs_drift_pooled") < level),
        "coverage_ok": None if coverage is None else bool(coverage["within"]),
        "ratio_to_naive": ratio,
        "ratio_to_naive_price": summary.get("mae_ratio_to_naive"),
        "p_value": max(step_1, pooled),
        "p_value_drift": _p_value(evidence, "vs_drift_pooled"),
        "minimum_detectable_effect": None if detectable is None else detectable["mean_abs_log_error"],
        "basis": f"walk-forward backtest{_procedure(backtest)}, {windows} windows, one-sided Diebold-Mariano on "
        f"{evidence.get('loss', 'absolute error in price units')} vs naive at step 1 and pooled (larger p-value "
        f"shown) and vs drift pooled, level {level}",
        "trained_through": trained_through,
    }


def stored_skill(metadata: dict[str, Any], level: float) -> dict[str, Any]:
    """The skill stored at training, or `skill_of` again for a version stored before its current fields existed."""
    skill = metadata.get("skill")
    return dict(skill) if skill and "beats_drift" in skill else skill_of(metadata, level)


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
    skill = skill_of(metadata, level)
    return bool(evidence) and bool(skill["beats_naive"] and skill["beats_drift"]) and _coverage_holds(evidence)


def _coverage_holds(evidence: dict[str, Any]) -> bool:
    """The gate's criterion besides the DM tests: the served 90 % band covers as it is served."""
    coverage = evidence.get("coverage_90")
    return bool(coverage is not None and coverage["within"])


def _beats_references(evidence: dict[str, Any], level: float) -> bool:
    """The intersection-union test: every one-sided DM test against naive and drift rejects at `level`."""
    return all(_p_value(evidence, test) < level for test in GATING)


def _ratio_text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _fmt(test: dict[str, Any]) -> str:
    statistic = "n/a" if test["statistic"] is None else f"{test['statistic']:.3f}"
    return f"DM {statistic}, p {test['p_value']:.4f}"


def _not_comparable(candidate: dict[str, Any], champion: dict[str, Any]) -> str | None:
    """Why the champion cannot be re-scored like for like on the candidate's folds (None: it can).

    Another dataset gives other actuals; another horizon, label (adj_close
    against close) or window length scores other targets or other windows.
    """
    sha256 = (candidate.get("data") or {}).get("sha256")
    if not sha256 or (champion.get("data") or {}).get("sha256") != sha256:
        return "trained on another dataset"
    differing = [key for key in ("horizon", "label", "window") if champion.get(key) != candidate.get(key)]
    if differing:
        described = ", ".join(f"{key} {champion.get(key)!r} vs {candidate.get(key)!r}" for key in differing)
        return f"another {' and '.join(differing)} ({described})"
    return None


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
    Never raises for a champion that cannot be re-scored: that is reported
    as "not comparable" (the caller holds the alias lock, with the version stored).
    """
    nominal = gate.significance_level
    backtest = candidate.get("backtest") or {}
    evidence = dict(backtest.get("evidence") or {})
    protocol = backtest.get("protocol") or {}
    ratio, _basis = headline_ratio(candidate)
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
        "combination": "intersection-union: every DM test against naive and drift must reject at the level",
        "loss": evidence.get("loss"),
        **{
            key: evidence.get(key)
            for key in ("vs_naive_step_1", "vs_naive_pooled", "vs_drift_pooled", "vs_ridge_pooled", "coverage_90")
        },
        "price_units": evidence.get("price_units"),
        "minimum_detectable_effect": minimum_detectable(evidence, level),
    }
    needs = f"needs p < {level:.4g}" + (f", the level of attempt {attempt}" if gate.spend_over_attempts else "")
    champion_version = int(champion["version"]) if champion is not None else None

    def verdict(promoted: bool, reason: str, champion_ratio: float | None = None) -> GateDecision:
        record["beats_naive"] = bool(evidence) and all(
            _p_value(evidence, test) < level for test in ("vs_naive_step_1", "vs_naive_pooled")
        )
        record["beats_drift"] = bool(evidence) and _p_value(evidence, "vs_drift_pooled") < level
        record["coverage_ok"] = _coverage_holds(evidence)
        return GateDecision(promoted, reason, ratio, champion_version, champion_ratio, "walk-forward backtest", record)

    if not evidence:
        return verdict(False, "no walk-forward backtest: there is no out-of-sample evidence of skill to promote on")
    step_1, pooled, drift = evidence["vs_naive_step_1"], evidence["vs_naive_pooled"], evidence["vs_drift_pooled"]
    # Skill at the nominal level with the band covering, but not enough evidence at the level spent (or a
    # tie with the champion): a shadow challenger, whose live forecasts are the evidence retries cannot buy.
    record["challenger"] = bool(
        _beats_references(evidence, nominal) and _coverage_holds(evidence) and not _beats_references(evidence, level)
    )
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
    if not drift["p_value"] < level:
        return verdict(
            False,
            f"no evidence of beating the mean-return drift baseline pooled over steps: {_fmt(drift)} ({needs})",
        )
    coverage = evidence.get("coverage_90")
    if coverage is None or not coverage["within"]:
        if coverage is None:
            measured = "none"
        else:
            measured = coverage.get("failed") or (
                f"{coverage['coverage']:.3f} of {coverage['windows']} windows "
                f"(tolerance {coverage['low']:.3f}-{coverage['high']:.3f})"
            )
        band = (coverage or {}).get("band", "step-1")
        return verdict(False, f"90 % {band} band coverage is not within the binomial tolerance: {measured}")
    passed = (
        f"{_fmt(step_1)} at step 1 and {_fmt(pooled)} pooled against naive, {_fmt(drift)} against drift, "
        f"at level {level:.4g}"
        + (f" (attempt {attempt})" if gate.spend_over_attempts else "")
        + f"; ratio to naive {_ratio_text(ratio)}"
    )
    if champion is None or not gate.compare_with_champion:
        return verdict(True, f"beats naive and drift with evidence: {passed}")
    why_not = _not_comparable(candidate, champion)
    champion_forecast: np.ndarray | None = None
    if why_not is None and (candidate_forecasts is None or rescore is None):
        why_not = "it could not be re-scored on the candidate's folds (no forecasts to pair with)"
    if why_not is None and candidate_forecasts is not None and rescore is not None:
        try:
            champion_forecast = np.asarray(rescore(champion), dtype=np.float64)
        except Exception as error:  # the caller holds the alias lock with the version stored: report, never raise
            why_not = f"its re-score failed ({type(error).__name__}: {error})"
        else:
            if champion_forecast.shape != candidate_forecasts["actual"].shape:
                why_not = (
                    f"its re-score gave forecasts shaped {champion_forecast.shape}, "
                    f"not {candidate_forecasts['actual'].shape}"
                )
    if why_not is not None or champion_forecast is None or candidate_forecasts is None:
        record["champion"] = f"not comparable: {why_not}"
        return verdict(
            True,
            f"beats naive and drift with evidence: {passed}; champion v{champion_version} not comparable ({why_not})",
        )
    actual = candidate_forecasts["actual"]
    candidate_loss = log_errors(actual, candidate_forecasts["model"]).mean(axis=1)
    champion_loss = log_errors(actual, champion_forecast).mean(axis=1)
    naive_loss = float(log_errors(actual, candidate_forecasts["naive"]).mean())
    champion_ratio = float(champion_loss.mean() / naive_loss) if naive_loss > 0 else None
    candidate_ratio = float(candidate_loss.mean() / naive_loss) if naive_loss > 0 else None
    # The same windows, so the test is paired: one-sided, "no better than the champion" is the null.
    paired = significance.diebold_mariano(candidate_loss, champion_loss, int(candidate.get("horizon") or 1))
    record["vs_champion_pooled"] = {
        **paired,
        "champion_version": champion_version,
        "level": level,
        "candidate_ratio": candidate_ratio,
        "champion_ratio": champion_ratio,
    }
    figures = (
        f"|log error| ratio to naive {_ratio_text(candidate_ratio)} vs {_ratio_text(champion_ratio)}, {_fmt(paired)}"
    )
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
        f"beats naive and drift with evidence: {passed}; beats champion v{champion_version} re-scored on the same"
        f" folds ({figures})",
        champion_ratio,
    )
