"""Forecast metrics: the price-level MASE beside the log one, and the histories the scales and drift come from."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import ar_returns_prices
from training import evaluation
from training.baselines import drift_forecast, mean_log_return


def test_mase_log_is_the_same_for_the_same_moves_at_any_price_level() -> None:
    history = ar_returns_prices(300, 0.2, seed=1)
    actual = history[-40:].reshape(-1, 1)
    last = history[-41:-1]
    predicted = last.reshape(-1, 1) * 1.001
    cheap = evaluation.forecast_metrics(
        actual, predicted, last, evaluation.naive_scale(history), evaluation.naive_log_scale(history)
    )
    scaled = 250.0
    dear = evaluation.forecast_metrics(
        actual * scaled,
        predicted * scaled,
        last * scaled,
        evaluation.naive_scale(history * scaled),
        evaluation.naive_log_scale(history * scaled),
    )
    assert dear["mase_log"] == pytest.approx(cheap["mase_log"])
    assert dear["mase"] == pytest.approx(cheap["mase"])
    expected = np.mean(np.abs(np.log(actual / predicted))) / np.mean(np.abs(np.diff(np.log(history))))
    assert cheap["mase_log"] == pytest.approx(expected)
    assert cheap["per_step"][0]["mase_log"] == pytest.approx(expected)


def test_mase_log_is_none_for_a_forecast_that_is_not_a_price() -> None:
    actual, last = np.array([[10.0], [11.0]]), np.array([10.0, 10.5])
    metrics = evaluation.forecast_metrics(actual, np.array([[-1.0], [11.0]]), last, 1.0, 0.01)
    assert metrics["mase_log"] is None and metrics["mase"] == pytest.approx(5.5)


def test_drift_comes_from_every_row_before_the_scored_part_and_the_scales_from_the_training_rows() -> None:
    training_rows = 100.0 * np.exp(0.01 * np.arange(60))
    past_rows = np.concatenate([training_rows, training_rows[-1] * np.exp(-0.02 * np.arange(1, 21))])
    windows = np.stack([past_rows[-10:] * factor for factor in (1.0, 1.01)])
    actual = windows[:, -1:] * 1.02
    metrics = evaluation.compare_with_baselines(actual, actual, windows, training_rows, past_rows)
    drift = drift_forecast(windows[:, -1], 1, mean_log_return(past_rows))
    assert metrics["drift"]["mae"] == pytest.approx(float(np.mean(np.abs(drift - actual))))
    assert metrics["naive"]["mase"] == pytest.approx(
        metrics["naive"]["mae"] / evaluation.naive_scale(training_rows)  # type: ignore[operator]
    )
    assert metrics["naive"]["mase_log"] == pytest.approx(np.log(1.02) / 0.01)
