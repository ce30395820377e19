"""The baselines every model is scored beside: naive, drift and the ridge on lagged returns."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import ar_returns_prices
from training import evaluation
from training.baselines import RidgeBaseline, drift_forecast, mean_log_return, naive_forecast, unfitted_forecasts
from training.features import make_windows
from training.spec import WindowSpec

SPEC = WindowSpec(features=("close",), label="close", window=10, horizon=3)


def test_naive_repeats_the_last_value_for_every_step() -> None:
    np.testing.assert_array_equal(naive_forecast(np.array([2.0, 5.0]), 3), [[2.0, 2.0, 2.0], [5.0, 5.0, 5.0]])


def test_drift_grows_the_last_value_by_the_historys_mean_log_return() -> None:
    history = 10.0 * np.exp(0.01 * np.arange(50))  # +1 % (log) every day
    assert mean_log_return(history) == pytest.approx(0.01)
    np.testing.assert_allclose(
        drift_forecast(np.array([12.0, 9.0]), 2, 0.01),
        [[12.0 * np.exp(0.01), 12.0 * np.exp(0.02)], [9.0 * np.exp(0.01), 9.0 * np.exp(0.02)]],
    )


def test_unfitted_forecasts_are_naive_and_drift_of_the_same_windows() -> None:
    label_windows = np.array([[10.0, 11.0, 12.0]])
    history = np.array([100.0, 100.0 * np.exp(0.02), 100.0 * np.exp(0.04)])
    forecasts = unfitted_forecasts(label_windows, 2, history)
    assert list(forecasts) == ["naive", "drift"]
    np.testing.assert_array_equal(forecasts["naive"], [[12.0, 12.0]])
    np.testing.assert_allclose(forecasts["drift"], [[12.0 * np.exp(0.02), 12.0 * np.exp(0.04)]])


def ridge_and_naive_mase(prices: np.ndarray) -> tuple[float, float]:
    inputs, futures = make_windows(prices[:, None], SPEC)
    train, test = slice(0, 2000), slice(2000, None)
    ridge = RidgeBaseline.fit(inputs[train], futures[train], SPEC)
    last = inputs[test, -1, 0]
    ridge_metrics = evaluation.forecast_metrics(futures[test], ridge.predict(inputs[test]), last)
    naive_metrics = evaluation.forecast_metrics(futures[test], naive_forecast(last, SPEC.horizon), last)
    return ridge_metrics["per_step"][0]["mae_ratio_to_naive"], naive_metrics["mae_ratio_to_naive"]


def test_ridge_beats_naive_when_returns_are_strongly_autocorrelated() -> None:
    ridge_mase, naive_mase = ridge_and_naive_mase(ar_returns_prices(3000, 0.7, seed=2))
    assert naive_mase == pytest.approx(1.0)
    # One step ahead, the AR(1) optimum has sqrt(1 - 0.7**2) = 0.71 of naive's error.
    assert ridge_mase < 0.8


def test_ridge_does_not_beat_naive_on_a_random_walk() -> None:
    ridge_mase, _ = ridge_and_naive_mase(ar_returns_prices(3000, 0.0, seed=2))
    assert ridge_mase > 0.97
