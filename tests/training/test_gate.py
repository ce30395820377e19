"""The promotion gate's rule, case by case (a pure function of two metadata dicts)."""

from __future__ import annotations

from typing import Any

import pytest

from training.gate import GateSettings, decide, headline_mase


def version(number: int, mase: float | None, backtest_mase: float | None = None) -> dict[str, Any]:
    """The parts of a version's metadata the gate reads."""
    metadata: dict[str, Any] = {"version": number, "metrics": {"model": {"mase": mase}}}
    if backtest_mase is not None:
        metadata["backtest"] = {"summary": {"model": {"mase": backtest_mase}}}
    return metadata


def test_first_version_that_beats_naive_is_promoted() -> None:
    decision = decide(version(1, 0.95), None, GateSettings())
    assert decision.promoted
    assert decision.reason == "MASE 0.9500 on the test split passes the gate"
    assert (decision.champion_version, decision.champion_mase, decision.basis) == (None, None, "test split")


def test_a_model_that_loses_to_naive_is_refused() -> None:
    decision = decide(version(1, 1.02), None, GateSettings())
    assert not decision.promoted
    assert "above the gate's 1.0000" in decision.reason
    assert "does not beat the naive last-value forecast" in decision.reason


def test_exactly_naive_passes_the_ceiling() -> None:
    assert decide(version(1, 1.0), None, GateSettings()).promoted


def test_a_candidate_worse_than_the_champion_is_refused() -> None:
    decision = decide(version(3, 0.97), version(2, 0.95), GateSettings())
    assert not decision.promoted
    assert decision.reason == "MASE 0.9700 is worse than champion v2's 0.9500"
    assert (decision.champion_version, decision.champion_mase) == (2, 0.95)


def test_a_candidate_as_good_as_the_champion_is_promoted() -> None:
    assert decide(version(3, 0.95), version(2, 0.95), GateSettings()).promoted


def test_worse_than_champion_passes_when_the_gate_allows_it() -> None:
    assert decide(version(3, 0.97), version(2, 0.95), GateSettings(require_not_worse=False)).promoted


def test_a_looser_ceiling_lets_a_weaker_model_through() -> None:
    assert decide(version(1, 1.05), None, GateSettings(max_mase=1.1)).promoted


def test_no_mase_is_refused() -> None:
    decision = decide(version(1, None), None, GateSettings())
    assert not decision.promoted
    assert decision.reason == "no MASE could be computed for the candidate"


def test_the_backtest_mase_is_judged_before_the_test_split() -> None:
    # Lucky on the single test split, but loses to naive over the walk-forward folds.
    decision = decide(version(1, 0.9, backtest_mase=1.05), None, GateSettings())
    assert not decision.promoted
    assert decision.basis == "walk-forward backtest"
    assert decision.candidate_mase == pytest.approx(1.05)


def test_champion_is_compared_on_its_own_headline_figure() -> None:
    decision = decide(version(2, 0.99, backtest_mase=0.96), version(1, 0.9, backtest_mase=0.97), GateSettings())
    assert decision.promoted
    assert decision.champion_mase == pytest.approx(0.97)


def test_headline_mase_falls_back_when_the_backtest_has_none() -> None:
    metadata = {**version(1, 0.93), "backtest": {"summary": {"model": {"mase": None}}}}
    assert headline_mase(metadata) == (pytest.approx(0.93), "test split")


def test_decision_is_plain_json() -> None:
    assert decide(version(1, 0.9), None, GateSettings()).to_json() == {
        "promoted": True,
        "reason": "MASE 0.9000 on the test split passes the gate",
        "candidate_mase": 0.9,
        "champion_version": None,
        "champion_mase": None,
        "basis": "test split",
    }
