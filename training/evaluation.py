"""Forecast metrics in price units, for a model and its baselines (`training.baselines`) alike.

All functions take arrays shaped (windows, horizon) and return plain floats,
so they serve the test split, the walk-forward backtest and the benchmark
alike. MASE here is the model's MAE divided by the naive last-value
forecast's MAE on the same windows: below 1.0 beats "tomorrow equals today".
"""

from __future__ import annotations

from typing import Any

import numpy as np

from training.baselines import UNFITTED_BASELINES, naive_forecast, unfitted_forecasts


def _step_metrics(actual: np.ndarray, predicted: np.ndarray, last: np.ndarray, naive_mae: float) -> dict[str, Any]:
    error = predicted - actual
    mae = float(np.mean(np.abs(error)))
    actual_move = np.sign(actual - last)
    predicted_move = np.sign(predicted - last)
    # Days without a move, or forecasts of no move, have no direction to get right.
    scored = (actual_move != 0) & (predicted_move != 0)
    return {
        "mae": mae,
        "rmse": float(np.sqrt(np.mean(error**2))),
        "mape": float(np.mean(np.abs(error) / np.abs(actual)) * 100),
        "mase": float(mae / naive_mae) if naive_mae > 0 else None,
        "directional_accuracy": float(np.mean(actual_move[scored] == predicted_move[scored])) if scored.any() else None,
    }


def forecast_metrics(actual: np.ndarray, predicted: np.ndarray, last: np.ndarray) -> dict[str, Any]:
    """MAE, RMSE, MAPE (%), MASE vs naive and directional accuracy, overall and per step."""
    actual = np.asarray(actual, dtype=np.float64)
    predicted = np.asarray(predicted, dtype=np.float64)
    last = np.asarray(last, dtype=np.float64)
    horizon = actual.shape[1]
    naive = naive_forecast(last, horizon)
    per_step = []
    for step in range(horizon):
        naive_mae = float(np.mean(np.abs(naive[:, step] - actual[:, step])))
        per_step.append({"step": step + 1, **_step_metrics(actual[:, step], predicted[:, step], last, naive_mae)})
    overall_naive_mae = float(np.mean(np.abs(naive - actual)))
    overall = _step_metrics(actual.ravel(), predicted.ravel(), np.repeat(last, horizon), overall_naive_mae)
    return {**overall, "windows": int(actual.shape[0]), "per_step": per_step}


def compare_with_baselines(
    actual: np.ndarray, predicted: np.ndarray, label_windows: np.ndarray
) -> dict[str, dict[str, Any]]:
    """The model's metrics beside the naive and drift baselines' on the same windows."""
    last = label_windows[:, -1]
    baselines = unfitted_forecasts(label_windows, actual.shape[1])
    return {
        "model": forecast_metrics(actual, predicted, last),
        **{name: forecast_metrics(actual, baselines[name], last) for name in UNFITTED_BASELINES},
    }
