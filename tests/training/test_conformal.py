"""Split-conformal intervals: quantile arithmetic, coverage math, and the studentised score."""

from __future__ import annotations

import numpy as np
import pytest

from training import conformal
from training.config import INTERVAL_SCORES
from training.spec import WindowSpec

SPEC = WindowSpec(features=("close",), label="close", window=20, horizon=2)


def random_walk_windows(
    rng: np.random.Generator, count: int, volatility: np.ndarray | float, spec: WindowSpec = SPEC
) -> tuple[np.ndarray, np.ndarray]:
    """Raw windows and futures of a driftless log random walk, one volatility per window."""
    sigma = np.broadcast_to(np.asarray(volatility, dtype=float), (count,))[:, None]
    steps = rng.normal(size=(count, spec.window + spec.horizon - 1)) * sigma
    path = 100 * np.exp(np.concatenate([np.zeros((count, 1)), np.cumsum(steps, axis=1)], axis=1))
    return path[:, : spec.window, None], path[:, spec.window :]


def test_calibrate_takes_the_corrected_rank_of_the_absolute_log_residuals() -> None:
    # 100 residuals 0.001 .. 0.100: ceil(101 * 0.9) = 91st smallest, ceil(101 * 0.8) = 81st.
    residuals = np.arange(1, 101) / 1000
    actual = np.exp(np.column_stack([residuals, -residuals[::-1]]))
    widths = conformal.calibrate(actual, np.ones_like(actual), (0.8, 0.9))
    assert widths["90"] == pytest.approx([0.091, 0.091])
    assert widths["80"] == pytest.approx([0.081, 0.081])


def test_a_level_with_too_few_calibration_windows_is_refused_not_clamped() -> None:
    # 0.95 needs ceil(0.95 / 0.05) = 19 windows; 18 cannot give the rank ceil(19 * 0.95) = 19.
    actual = np.exp(np.arange(1, 19)[:, None] / 100)
    widths = conformal.calibrate(actual, np.ones_like(actual), (0.9, 0.95))
    assert set(widths) == {"90"}
    assert conformal.refused_levels(18, (0.9, 0.95)) == {"95": "needs at least 19 calibration windows, has 18"}
    actual_19 = np.exp(np.arange(1, 20)[:, None] / 100)
    assert conformal.calibrate(actual_19, np.ones_like(actual_19), (0.95,))["95"] == pytest.approx([0.19])


def test_calibrate_intervals_lists_the_refused_levels_in_the_metadata() -> None:
    spec = WindowSpec(features=("close",), label="close", window=20, horizon=1)
    inputs, futures = random_walk_windows(np.random.default_rng(3), 10, 0.02, spec)
    intervals = conformal.calibrate_intervals(inputs, futures, inputs[:, -1, :], spec, (0.8, 0.9, 0.95))
    assert set(intervals["half_widths"]) == {"80", "90"}
    assert intervals["refused"] == {"95": "needs at least 19 calibration windows, has 10"}


def test_a_path_band_covers_whole_paths_where_per_step_bands_do_not() -> None:
    spec = WindowSpec(features=("close",), label="close", window=20, horizon=5)
    rng = np.random.default_rng(11)
    calibration_inputs, calibration_futures = random_walk_windows(rng, 4000, 0.02, spec)
    test_inputs, test_futures = random_walk_windows(rng, 4000, 0.02, spec)
    paths_inside = {}
    for band in conformal.BANDS:
        intervals = conformal.calibrate_intervals(
            calibration_inputs,
            calibration_futures,
            calibration_inputs[:, -1, :].repeat(5, axis=1),
            spec,
            (0.9,),
            band=band,
        )
        lower, upper = conformal.bounds_for(test_inputs, test_inputs[:, -1, :].repeat(5, axis=1), intervals, spec)["90"]
        paths_inside[band] = float(np.mean(np.all((test_futures >= lower) & (test_futures <= upper), axis=1)))
    assert paths_inside["path"] == pytest.approx(0.9, abs=0.015)
    assert paths_inside["per_step"] < 0.85


def test_calibrate_refuses_levels_outside_zero_and_one() -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        conformal.calibrate(np.ones((5, 1)), np.ones((5, 1)), (0.9, 1.0))


def test_coverage_of_bounds_counts_outcomes_inside_and_averages_widths() -> None:
    actual = np.array([[1.0], [2.0], [3.0], [4.0]])
    lower = np.array([[0.5], [2.5], [2.0], [4.0]])
    upper = np.array([[1.5], [3.0], [4.0], [5.0]])
    result = conformal.coverage_of_bounds(actual, {"90": (lower, upper)})["90"]
    # 1 inside, 2 below, 3 inside, 4 on the edge (inside).
    assert result["coverage"] == pytest.approx(0.75)
    assert result["coverage_per_step"] == pytest.approx([0.75])
    assert result["mean_width"] == pytest.approx((1.0 + 0.5 + 2.0 + 1.0) / 4)
    assert result["windows"] == 4


@pytest.mark.parametrize("score", INTERVAL_SCORES)
def test_exchangeable_residuals_are_covered_at_the_nominal_level(score: str) -> None:
    rng = np.random.default_rng(7)
    calibration_inputs, calibration_futures = random_walk_windows(rng, 3000, 0.02)
    test_inputs, test_futures = random_walk_windows(rng, 30000, 0.02)

    def last_value(inputs: np.ndarray) -> np.ndarray:
        return np.repeat(inputs[:, -1, :], SPEC.horizon, axis=1)

    intervals = conformal.calibrate_intervals(
        calibration_inputs, calibration_futures, last_value(calibration_inputs), SPEC, (0.8, 0.9, 0.95), score=score
    )
    result = conformal.coverage_for(test_inputs, test_futures, last_value(test_inputs), intervals, SPEC)
    for key, level in (("80", 0.8), ("90", 0.9), ("95", 0.95)):
        assert result[key]["coverage"] == pytest.approx(level, abs=0.02)
        for step_coverage in result[key]["coverage_per_step"]:
            assert step_coverage == pytest.approx(level, abs=0.025)


def test_studentised_score_keeps_coverage_when_volatility_changes_and_absolute_score_does_not() -> None:
    # Calibrate in a turbulent regime (2 % a day), forecast in a calm one (1 %).
    rng = np.random.default_rng(11)
    calibration_inputs, calibration_futures = random_walk_windows(rng, 2000, 0.02)
    test_inputs, test_futures = random_walk_windows(rng, 20000, 0.01)

    def coverage_90(score: str) -> float:
        calibration_forecast = np.repeat(calibration_inputs[:, -1, :], SPEC.horizon, axis=1)
        test_forecast = np.repeat(test_inputs[:, -1, :], SPEC.horizon, axis=1)
        intervals = conformal.calibrate_intervals(
            calibration_inputs, calibration_futures, calibration_forecast, SPEC, (0.9,), score=score
        )
        return conformal.coverage_for(test_inputs, test_futures, test_forecast, intervals, SPEC)["90"]["coverage"]

    assert coverage_90("studentized") == pytest.approx(0.9, abs=0.02)
    assert coverage_90("absolute") > 0.98


def test_bounds_for_scales_each_window_by_its_own_volatility() -> None:
    rng = np.random.default_rng(3)
    inputs, _ = random_walk_windows(rng, 2, np.array([0.01, 0.04]))
    predicted = np.full((2, SPEC.horizon), 100.0)
    intervals = {"score": "studentized", "half_widths": {"90": [1.5, 2.0]}}
    lower, upper = conformal.bounds_for(inputs, predicted, intervals, SPEC)["90"]
    volatility = conformal.window_volatility(inputs, SPEC)
    assert upper.shape == lower.shape == (2, SPEC.horizon)
    np.testing.assert_allclose(np.log(upper / predicted), np.outer(volatility, [1.5, 2.0]))
    np.testing.assert_allclose(lower * upper, predicted**2)
    assert (upper[1] - lower[1] > upper[0] - lower[0]).all()


def test_bounds_for_reads_metadata_without_a_score_as_the_absolute_score() -> None:
    inputs = np.full((1, SPEC.window, 1), 50.0)
    predicted = np.array([[50.0, 60.0]])
    lower, upper = conformal.bounds_for(inputs, predicted, {"half_widths": {"80": [0.1, 0.2]}}, SPEC)["80"]
    np.testing.assert_allclose(upper, predicted * np.exp([0.1, 0.2]))
    np.testing.assert_allclose(lower, predicted / np.exp([0.1, 0.2]))


def test_bounds_for_refuses_forecasts_that_do_not_match_the_windows() -> None:
    with pytest.raises(ValueError, match="one row per input window"):
        conformal.bounds_for(np.ones((3, SPEC.window, 1)), np.ones((2, SPEC.horizon)), {"half_widths": {}}, SPEC)


def test_window_volatility_is_floored_for_a_price_that_never_moves() -> None:
    flat = np.full((1, SPEC.window, 1), 12.5)
    assert conformal.window_volatility(flat, SPEC) == pytest.approx([conformal.VOLATILITY_FLOOR])


def test_window_volatility_leaves_out_the_returns_of_halted_sessions() -> None:
    spec = WindowSpec(features=("close", "volume"), label="close", window=5)
    close = np.array([100.0, 101.0, 101.0, 101.0, 99.99])
    volume = np.array([1e6, 1e6, 0.0, 0.0, 1e6])
    windows = np.stack([close, volume], axis=1)[None]
    expected = np.sqrt(np.mean(np.log([101.0 / 100.0, 99.99 / 101.0]) ** 2))
    np.testing.assert_allclose(conformal.window_volatility(windows, spec), [expected])
    halted = np.stack([np.full(5, 100.0), np.zeros(5)], axis=1)[None]
    assert conformal.window_volatility(halted, spec)[0] == conformal.VOLATILITY_FLOOR
