"""Coverage judged as the bands are served: a correct path band passes, a per-step band short at step 5 fails.

Synthetic AR(1) log returns, forecast by their true conditional mean (real
skill over naive and drift), bands calibrated split-conformally on earlier
windows: the gate's pure functions, no network.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from training import conformal
from training.coverage_check import served_band_coverage
from training.evidence import gate_evidence
from training.gate import GateSettings, decide

HORIZON = 5
PERSISTENCE = 0.5


def ar_windows(origins: int, seed: int) -> dict[str, np.ndarray]:
    """Actual paths, the conditional-mean forecast, naive and drift, (origins, HORIZON) each, in price units."""
    rng = np.random.default_rng(seed)
    returns = np.zeros(origins + HORIZON + 1)
    for day in range(1, len(returns)):
        returns[day] = PERSISTENCE * returns[day - 1] + 0.01 * rng.standard_normal()
    prices = 100 * np.exp(np.cumsum(returns))
    steps = np.arange(1, HORIZON + 1)
    origin = np.arange(1, origins + 1)
    actual = prices[origin[:, None] + steps[None, :]]
    last = prices[origin]
    # E[log p_{t+k} - log p_t] = sum_{j<=k} phi^j r_t under an AR(1) of the returns.
    expected = np.cumsum(PERSISTENCE ** steps[None, :] * returns[origin][:, None], axis=1)
    drift = np.mean(returns[: origin[0] + 1])
    return {
        "actual": actual,
        "model": last[:, None] * np.exp(expected),
        "naive": np.repeat(last[:, None], HORIZON, axis=1),
        "drift": last[:, None] * np.exp(drift * steps[None, :]),
    }


def calibrated_bounds(band: str) -> tuple[dict[str, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Test windows and their 90 % band, calibrated on 1,000 earlier windows of another draw."""
    calibration = ar_windows(1000, seed=1)
    widths = np.asarray(
        conformal.calibrate(calibration["actual"], calibration["model"], (0.9,), band=band)["90"], dtype=np.float64
    )
    test = ar_windows(1500, seed=2)
    return test, (test["model"] * np.exp(-widths), test["model"] * np.exp(widths))


def metadata(evidence: dict[str, Any]) -> dict[str, Any]:
    """A candidate's metadata around its backtest evidence, as the gate reads it."""
    return {
        "version": 1,
        "horizon": HORIZON,
        "data": {"sha256": "synthetic"},
        "backtest": {"evidence": evidence, "protocol": {"test_start": "2024-01-02", "test_end": "2024-12-31"}},
    }


def test_a_horizon_5_path_band_with_real_skill_is_promoted() -> None:
    test, bounds = calibrated_bounds("path")
    evidence = gate_evidence(test, bounds, HORIZON, "path", 0.9, 0.05)
    coverage = evidence["coverage_90"]
    assert coverage["within"] and coverage["band"] == "path"
    # Judged at step 1, this correct path band would have been refused: it covers step 1 far above 0.9.
    assert coverage["step_1"] > 0.95 and abs(coverage["coverage_all_windows"] - 0.9) < 0.03
    assert evidence["vs_naive_pooled"]["p_value"] < 1e-4 and evidence["vs_drift_pooled"]["p_value"] < 1e-4
    decision = decide(metadata(evidence), None, GateSettings())
    assert decision.promoted, decision.reason
    assert decision.evidence["coverage_ok"] and decision.evidence["beats_drift"]


def test_a_per_step_band_that_covers_step_1_but_not_step_5_is_refused() -> None:
    test, (lower, upper) = calibrated_bounds("per_step")
    assert served_band_coverage(test["actual"], lower, upper, "per_step", 0.9, 0.05)["within"]
    # Step 5's band narrowed to 60 % of its calibrated width: about 77 % coverage there.
    narrow = np.ones(HORIZON)
    narrow[-1] = 0.6
    log_width = np.log(upper / test["model"]) * narrow
    lower, upper = test["model"] * np.exp(-log_width), test["model"] * np.exp(log_width)
    coverage = served_band_coverage(test["actual"], lower, upper, "per_step", 0.9, 0.05)
    assert not coverage["within"]
    assert [step["rejected"] for step in coverage["steps"]] == [False, False, False, False, True]
    assert coverage["steps"][0]["coverage"] > 0.87 and coverage["steps"][4]["every_nth_window"] == 5
    decision = decide(
        metadata(gate_evidence(test, (lower, upper), HORIZON, "per_step", 0.9, 0.05)), None, GateSettings()
    )
    assert not decision.promoted
    assert decision.reason.startswith("90 % per_step band coverage is not within the binomial tolerance: step 5 ")
    assert decision.reason.endswith("rejected by Holm)")


def test_the_loss_is_scale_free_a_price_level_change_leaves_the_verdict_alone() -> None:
    test, bounds = calibrated_bounds("path")
    grown = {name: values * np.linspace(1, 20, len(values))[:, None] for name, values in test.items()}
    scaled_bounds = tuple(values * np.linspace(1, 20, len(values))[:, None] for values in bounds)
    plain = gate_evidence(test, bounds, HORIZON, "path", 0.9, 0.05)
    grown_evidence = gate_evidence(grown, (scaled_bounds[0], scaled_bounds[1]), HORIZON, "path", 0.9, 0.05)
    assert grown_evidence["vs_naive_pooled"]["p_value"] == pytest.approx(plain["vs_naive_pooled"]["p_value"])
    # In price units the later, twenty-times-dearer windows dominate the test instead.
    assert (
        grown_evidence["price_units"]["vs_naive_pooled"]["p_value"]
        != plain["price_units"]["vs_naive_pooled"]["p_value"]
    )


def test_no_windows_is_no_coverage_and_says_so() -> None:
    empty = np.empty((0, HORIZON))
    for band in ("path", "per_step"):
        coverage = served_band_coverage(empty, empty, empty, band, 0.9, 0.05)
        assert not coverage["within"] and "not measured: no windows" in coverage["failed"]
