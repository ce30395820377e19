"""The promotion gate's rule, case by case: evidence against naive, drift, coverage and the champion."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from training.gate import GateSettings, attempt_entry, attempt_level, decide, skill_of
from training.store import headline_ratio


def dm(p_value: float, statistic: float = -3.0, windows: int = 500) -> dict[str, Any]:
    """A Diebold-Mariano result as the backtest records it."""
    return {"statistic": statistic, "p_value": p_value, "windows": windows, "lag": 0, "standard_error": 0.001}


def version(
    number: int,
    step_1: float = 0.001,
    pooled: float = 0.001,
    mae: tuple[float, float] = (0.9, 1.0),
    covered: bool = True,
    sha256: str = "abc",
    horizon: int = 1,
    drift: float = 0.001,
    label: str = "close",
    window: int = 40,
) -> dict[str, Any]:
    """The parts of a version's metadata the gate reads; `mae` is (model, drift) mean |log error|, naive's is 1."""
    return {
        "version": number,
        "horizon": horizon,
        "label": label,
        "window": window,
        "data": {"sha256": sha256},
        "trained_through": "2024-12-31",
        "backtest": {
            "summary": {"model": {"mae_ratio_to_naive": round(mae[0] + 0.05, 6)}},
            "protocol": {"test_start": "2024-01-02", "test_end": "2024-12-31"},
            "evidence": {
                "loss": "|log(actual / forecast)|",
                "vs_naive_step_1": dm(step_1),
                "vs_naive_pooled": dm(pooled),
                "vs_drift_pooled": dm(drift),
                "log_loss": {"model": mae[0], "naive": 1.0, "drift": mae[1]},
                "ratio_to_naive": mae[0],
                "coverage_90": {
                    "band": "per_step",
                    "within": covered,
                    "coverage": 0.9 if covered else 0.8,
                    "windows": 500,
                    "low": 0.874,
                    "high": 0.926,
                    "failed": ""
                    if covered
                    else "step 1 coverage 0.800 of 500 windows (binomial p 1e-10, rejected by Holm)",
                },
            },
        },
    }


def test_a_first_version_with_evidence_is_promoted_and_the_decision_records_why() -> None:
    decision = decide(version(1), None, GateSettings())
    assert decision.promoted
    assert decision.reason == (
        "beats naive and drift with evidence: DM -3.000, p 0.0010 at step 1 and DM -3.000, p 0.0010 pooled against "
        "naive, DM -3.000, p 0.0010 against drift, at level 0.025 (attempt 1); ratio to naive 0.9000"
    )
    record = decision.evidence
    assert record["dataset_sha256"] == "abc" and record["horizon"] == 1
    assert record["period"] == {"start": "2024-01-02", "end": "2024-12-31"}
    assert record["vs_naive_step_1"]["p_value"] == 0.001
    # A first attempt on its period: half the level, the other half kept for the attempts that may follow.
    assert (record["attempt"], record["significance_level"], record["nominal_level"]) == (1, 0.025, 0.05)
    assert record["earlier_versions"] == []


def test_no_evidence_at_step_1_is_refused_even_when_pooled_passes() -> None:
    decision = decide(version(1, step_1=0.2), None, GateSettings())
    assert not decision.promoted
    assert decision.reason == (
        "no evidence of skill at step 1: DM -3.000, p 0.2000 against naive (needs p < 0.025, the level of attempt 1); "
        "the model does not beat the naive last-value forecast"
    )


def test_a_tie_with_naive_is_no_skill() -> None:
    tie = version(1)
    tie["backtest"]["evidence"]["vs_naive_pooled"] = {"statistic": None, "p_value": 1.0, "windows": 500}
    decision = decide(tie, None, GateSettings())
    assert not decision.promoted
    assert decision.reason == (
        "no evidence of skill pooled over steps: DM n/a, p 1.0000 against naive "
        "(needs p < 0.025, the level of attempt 1)"
    )


def test_a_looser_level_lets_weaker_evidence_through() -> None:
    assert decide(version(1, step_1=0.04, pooled=0.04), None, GateSettings(significance_level=0.1)).promoted
    assert not decide(version(1, step_1=0.04, pooled=0.04), None, GateSettings()).promoted


def attempt(number: int, start: str = "2024-01-02", end: str = "2024-12-31") -> dict[str, Any]:
    """An attempt-ledger line as the gate reads it: the version and its evaluation period."""
    return {"version": number, "period": {"start": start, "end": end}, "promoted": False}


def test_attempts_on_overlapping_periods_spend_the_level() -> None:
    # Two refused attempts on periods overlapping this one: the third is judged at 0.05 / (3 x 4).
    earlier = [attempt(1, "2023-06-01", "2024-03-01"), attempt(2, "2024-12-30", "2025-06-30")]
    decision = decide(version(3, step_1=0.004, pooled=0.01), None, GateSettings(), attempts=earlier)
    assert not decision.promoted
    assert decision.reason == (
        "no evidence of skill pooled over steps: DM -3.000, p 0.0100 against naive "
        "(needs p < 0.004167, the level of attempt 3)"
    )
    record = decision.evidence
    assert (record["attempt"], record["earlier_versions"]) == (3, [1, 2])
    assert record["significance_level"] == pytest.approx(0.05 / 12)
    assert decide(version(3, step_1=0.004, pooled=0.004), None, GateSettings(), attempts=earlier).promoted


def test_attempts_on_other_periods_spend_nothing() -> None:
    earlier = [attempt(1, "2020-01-02", "2023-12-29"), {"version": 2, "period": {"start": None, "end": None}}]
    decision = decide(version(3, step_1=0.02, pooled=0.02), None, GateSettings(), attempts=earlier)
    assert decision.promoted and decision.evidence["attempt"] == 1


def test_without_spending_every_attempt_is_judged_at_the_full_level() -> None:
    earlier = [attempt(number) for number in range(1, 20)]
    decision = decide(
        version(20, step_1=0.04, pooled=0.04), None, GateSettings(spend_over_attempts=False), attempts=earlier
    )
    assert decision.promoted
    assert (decision.evidence["attempt"], decision.evidence["significance_level"]) == (20, 0.05)


def test_the_levels_of_all_attempts_never_sum_past_alpha() -> None:
    levels = [attempt_level(0.05, k) for k in range(1, 1001)]
    assert levels[:3] == pytest.approx([0.025, 0.05 / 6, 0.05 / 12])
    assert sum(levels[:20]) == pytest.approx(0.05 * 20 / 21)
    assert sum(levels) < 0.05


def test_the_attempt_entry_keeps_the_data_period_statistics_and_level() -> None:
    decision = decide(version(1), None, GateSettings())
    entry = attempt_entry(decision, 1, "2025-01-02T21:50:00+00:00", "job1")
    assert {key: entry[key] for key in ("version", "job_id", "promoted", "attempt", "significance_level")} == {
        "version": 1,
        "job_id": "job1",
        "promoted": True,
        "attempt": 1,
        "significance_level": 0.025,
    }
    assert entry["dataset_sha256"] == "abc" and entry["period"] == {"start": "2024-01-02", "end": "2024-12-31"}
    assert entry["vs_naive_step_1"]["p_value"] == 0.001 and entry["vs_naive_pooled"]["statistic"] == -3.0


def test_no_evidence_of_beating_drift_is_refused_though_naive_is_beaten() -> None:
    decision = decide(version(1, drift=0.03), None, GateSettings())
    assert not decision.promoted
    assert decision.reason == (
        "no evidence of beating the mean-return drift baseline pooled over steps: DM -3.000, p 0.0300 "
        "(needs p < 0.025, the level of attempt 1)"
    )
    assert decision.evidence["beats_naive"] and not decision.evidence["beats_drift"]


def test_naive_and_drift_are_judged_at_one_level_without_a_multiplicity_correction() -> None:
    # An intersection-union test: each at the attempt's level, not level / 3.
    assert decide(version(1, step_1=0.02, pooled=0.02, drift=0.02), None, GateSettings()).promoted


def test_coverage_outside_the_binomial_tolerance_is_refused() -> None:
    decision = decide(version(1, covered=False), None, GateSettings())
    assert not decision.promoted
    assert decision.reason == (
        "90 % per_step band coverage is not within the binomial tolerance: step 1 coverage 0.800 of 500 windows "
        "(binomial p 1e-10, rejected by Holm)"
    )
    assert decision.evidence["coverage_ok"] is False


def test_the_decision_reports_the_minimum_detectable_effect_at_its_level() -> None:
    detectable = decide(version(1), None, GateSettings()).evidence["minimum_detectable_effect"]
    # (t_0.975 + t_0.8) * 0.001 with 499 degrees of freedom, against naive's mean |log error| of 1.
    assert detectable["mean_abs_log_error"] == pytest.approx((1.9648 + 0.8423) * 0.001, rel=1e-3)
    assert detectable["relative"] == pytest.approx(detectable["mean_abs_log_error"])
    assert (detectable["power"], detectable["level"], detectable["windows"]) == (0.8, 0.025, 500)


def test_no_backtest_is_no_evidence() -> None:
    decision = decide({"version": 1, "metrics": {}}, None, GateSettings())
    assert not decision.promoted
    assert decision.reason == "no walk-forward backtest: there is no out-of-sample evidence of skill to promote on"


def test_a_champion_from_another_dataset_horizon_label_or_window_is_not_comparable() -> None:
    cases = {
        "trained on another dataset": version(1, sha256="other"),
        "another horizon (horizon 5 vs 1)": version(1, horizon=5),
        "another label (label 'adj_close' vs 'close')": version(1, label="adj_close"),
        "another window (window 20 vs 40)": version(1, window=20),
    }

    def never(_champion: dict[str, Any]) -> np.ndarray:
        raise AssertionError("a champion that is not like for like is not re-scored")

    for why, champion in cases.items():
        decision = decide(version(2), champion, GateSettings(), {"actual": np.ones((3, 1))}, never)
        assert decision.promoted
        assert decision.reason.endswith(f"champion v1 not comparable ({why})")
        assert decision.evidence["champion"] == f"not comparable: {why}"


def test_a_champion_whose_re_score_fails_or_misaligns_is_not_comparable_and_nothing_raises() -> None:
    forecasts = {"actual": np.ones((400, 1)), "model": np.ones((400, 1)), "naive": np.ones((400, 1))}

    def failing(_champion: dict[str, Any]) -> np.ndarray:
        raise ValueError("losses must be two 1-D arrays of one shape")

    decision = decide(version(2), version(1), GateSettings(), forecasts, failing)
    assert decision.promoted
    assert decision.evidence["champion"] == (
        "not comparable: its re-score failed (ValueError: losses must be two 1-D arrays of one shape)"
    )
    decision = decide(version(2), version(1), GateSettings(), forecasts, lambda _champion: np.ones((380, 1)))
    assert decision.evidence["champion"] == "not comparable: its re-score gave forecasts shaped (380, 1), not (400, 1)"


def _paired(candidate_error: float, champion_error: float) -> tuple[dict[str, np.ndarray], Any]:
    """Forecasts on 400 windows: the candidate's errors of scale `candidate_error`, the champion's (as its
    re-scoring returns them) of scale `champion_error`, naive's of scale 1; the noise of each is its own."""
    rng = np.random.default_rng(0)
    actual = 100 + rng.normal(size=(400, 1))
    model = actual + candidate_error * rng.normal(size=(400, 1))
    champion = actual + champion_error * rng.normal(size=(400, 1))
    forecasts = {"actual": actual, "model": model, "naive": actual + rng.normal(size=(400, 1))}
    return forecasts, lambda _champion: champion


def test_a_candidate_that_beats_the_re_scored_champion_replaces_it() -> None:
    forecasts, rescore = _paired(0.6, 0.8)
    decision = decide(version(2, mae=(0.6, 1.0)), version(1), GateSettings(), forecasts, rescore)
    assert decision.promoted, decision.reason
    paired = decision.evidence["vs_champion_pooled"]
    assert paired["p_value"] < 0.025 and paired["champion_version"] == 1 and paired["level"] == 0.025
    assert decision.reason.endswith(
        f"beats champion v1 re-scored on the same folds (|log error| ratio to naive "
        f"{decision.evidence['vs_champion_pooled']['candidate_ratio']:.4f} vs "
        f"{decision.champion_ratio_to_naive:.4f}, DM {paired['statistic']:.3f}, p {paired['p_value']:.4f})"
    )


def test_a_tie_with_the_champion_keeps_the_champion() -> None:
    # Lower MAE on these folds, but not by more than noise: the point comparison would have promoted it.
    forecasts, rescore = _paired(0.79, 0.8)
    decision = decide(version(2, mae=(0.79, 1.0)), version(1), GateSettings(), forecasts, rescore)
    paired = decision.evidence["vs_champion_pooled"]
    assert not decision.promoted
    assert paired["p_value"] >= 0.025
    assert decision.reason == (
        f"no evidence of beating champion v1 re-scored on the same folds (|log error| ratio to naive "
        f"{paired['candidate_ratio']:.4f} vs "
        f"{decision.champion_ratio_to_naive:.4f}, DM {paired['statistic']:.3f}, p {paired['p_value']:.4f}; "
        "needs p < 0.025, the level of attempt 1): a tie keeps the champion"
    )


def test_a_worse_candidate_keeps_the_champion() -> None:
    forecasts, rescore = _paired(0.9, 0.8)
    decision = decide(version(2), version(1), GateSettings(), forecasts, rescore)
    assert not decision.promoted
    assert decision.reason.startswith("no evidence of beating champion v1 re-scored on the same folds (")
    assert decision.evidence["vs_champion_pooled"]["p_value"] > 0.5
    assert decision.champion_ratio_to_naive is not None and decision.champion_ratio_to_naive < 0.9


def test_the_champion_test_spends_the_attempts_level_too() -> None:
    forecasts, rescore = _paired(0.6, 0.8)
    earlier = [attempt(number) for number in range(1, 10)]
    candidate = version(10, step_1=1e-9, pooled=1e-9, mae=(0.6, 1.0), drift=1e-9)
    decision = decide(candidate, version(1), GateSettings(), forecasts, rescore, earlier)
    assert decision.evidence["vs_champion_pooled"]["level"] == pytest.approx(0.05 / (10 * 11))


def test_without_the_comparison_a_worse_candidate_passes() -> None:
    forecasts, rescore = _paired(0.9, 0.8)
    assert decide(version(2), version(1), GateSettings(compare_with_champion=False), forecasts, rescore).promoted


def test_skill_of_summarises_the_versions_own_evidence() -> None:
    skill = skill_of(version(1, pooled=0.03, drift=0.07), 0.05)
    detectable = skill.pop("minimum_detectable_effect")
    assert skill == {
        "beats_naive": True,
        "beats_drift": False,
        "coverage_ok": True,
        "ratio_to_naive": 0.9,
        "ratio_to_naive_price": 0.95,
        "p_value": 0.03,
        "p_value_drift": 0.07,
        "basis": "walk-forward backtest, 500 windows, one-sided Diebold-Mariano on |log(actual / forecast)| vs naive"
        " at step 1 and pooled (larger p-value shown) and vs drift pooled, level 0.05",
        "trained_through": "2024-12-31",
    }
    assert detectable == pytest.approx((1.6479 + 0.8423) * 0.001, rel=1e-3)
    assert skill_of(version(1, step_1=0.5), 0.05)["beats_naive"] is False
    assert skill_of({"trained_through": "2024-01-02"}, 0.05)["basis"] == (
        "no walk-forward backtest: no evidence of skill"
    )


def test_headline_ratio_reads_the_backtest_then_the_test_split_and_old_metadata() -> None:
    assert headline_ratio(version(1)) == (pytest.approx(0.9), "walk-forward backtest")
    assert headline_ratio({"metrics": {"model": {"mae_ratio_to_naive": 0.93}}}) == (pytest.approx(0.93), "test split")
    # Written before the rename: "mase" was the MAE ratio to naive.
    assert headline_ratio({"metrics": {"model": {"mase": 0.95}}}) == (pytest.approx(0.95), "test split")


def test_skill_at_the_nominal_level_but_not_the_spent_one_marks_a_challenger() -> None:
    # Attempt 1 is judged at 0.05 / 2: p = 0.03 has skill at 0.05, not enough evidence at 0.025.
    decision = decide(version(1, step_1=0.03, pooled=0.03), None, GateSettings())
    assert not decision.promoted and decision.evidence["challenger"] is True


def test_no_skill_at_the_nominal_level_or_a_failed_criterion_is_no_challenger() -> None:
    assert decide(version(1, step_1=0.2), None, GateSettings()).evidence["challenger"] is False
    assert (
        decide(version(1, step_1=0.03, pooled=0.03, covered=False), None, GateSettings()).evidence["challenger"]
        is False
    )
    assert decide(version(1), None, GateSettings()).evidence["challenger"] is False


def test_a_tie_with_the_champion_marks_a_challenger_a_loss_does_not() -> None:
    # Lower loss on these folds (p about 0.26), not low enough to replace the champion: a challenger.
    forecasts, rescore = _paired(0.7, 0.8)
    assert decide(version(2, mae=(0.7, 1.0)), version(1), GateSettings(), forecasts, rescore).evidence["challenger"]
    forecasts, rescore = _paired(0.9, 0.8)
    assert not decide(version(2), version(1), GateSettings(), forecasts, rescore).evidence["challenger"]
