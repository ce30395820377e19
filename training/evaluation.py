"""Forecast metrics in price units, for a model and its baselines (`training.baselines`) alike.

Functions of arrays shaped (windows, horizon) that return plain floats, so
the test split and the walk-forward backtest score every forecaster the
same way. `mae_ratio_to_naive` (the model's MAE over the naive last-value
forecast's, on the same windows) is reported beside `log_mae_ratio_to_naive`,
the same on |log error|, which the promotion gate ranks by; `mase`
is Hyndman and Koehler's, scaled by the training part's in-sample one-step
naive MAE, comparable with Darts' and sktime's; `mase_log` is the same on
log prices, comparable across assets and price levels. Directional accuracy is
reported beside the "always up" rate, which is what it must beat.
See docs/design.md, "Names, baselines and exchange calendars".
"""

from __future__ import annotations

from typing import Any

import numpy as np

from training.baselines import UNFITTED_BASELINES, naive_forecast, unfitted_forecasts
from training.evidence import log_errors


def naive_scale(label_history: np.ndarray) -> float | None:
    """In-sample one-step naive MAE of a training history: the MASE denominator (Hyndman and Koehler)."""
    history = np.asarray(label_history, dtype=np.float64)
    if history.size < 2:
        return None
    scale = float(np.mean(np.abs(np.diff(history))))
    return scale if scale > 0 else None


def naive_log_scale(label_history: np.ndarray) -> float | None:
    """In-sample one-step naive MAE of a training history's log prices (its mean absolute daily log return)."""
    history = np.asarray(label_history, dtype=np.float64)
    if history.size < 2 or np.any(history <= 0):
        return None
    scale = float(np.mean(np.abs(np.diff(np.log(history)))))
    return scale if scale > 0 else None


def _log_mae(actual: np.ndarray, predicted: np.ndarray) -> float | None:
    """Mean |log(actual / predicted)|; None when a forecast is not a positive price (a minmax network's can be)."""
    if np.any(predicted <= 0) or np.any(actual <= 0):
        return None
    return float(np.mean(np.abs(np.log(actual / predicted))))


def _step_metrics(
    actual: np.ndarray,
    predicted: np.ndarray,
    last: np.ndarray,
    naive_mae: float,
    scale: float | None,
    log_scale: float | None = None,
) -> dict[str, Any]:
    error = predicted - actual
    mae = float(np.mean(np.abs(error)))
    log_mae = _log_mae(actual, predicted) if log_scale else None
    actual_move = np.sign(actual - last)
    predicted_move = np.sign(predicted - last)
    # Days without a move, or forecasts of no move, have no direction to get right.
    scored = (actual_move != 0) & (predicted_move != 0)
    moved = actual_move != 0
    return {
        "mae": mae,
        "rmse": float(np.sqrt(np.mean(error**2))),
        "mape": float(np.mean(np.abs(error) / np.abs(actual)) * 100),
        "mae_ratio_to_naive": float(mae / naive_mae) if naive_mae > 0 else None,
        "mase": float(mae / scale) if scale else None,
        "mase_log": log_mae / log_scale if log_mae is not None and log_scale else None,
        "directional_accuracy": float(np.mean(actual_move[scored] == predicted_move[scored])) if scored.any() else None,
        "direction_windows": int(scored.sum()),
        "always_up_rate": float(np.mean(actual_move[moved] > 0)) if moved.any() else None,
    }


def forecast_metrics(
    actual: np.ndarray,
    predicted: np.ndarray,
    last: np.ndarray,
    scale: float | None = None,
    log_scale: float | None = None,
) -> dict[str, Any]:
    """MAE, RMSE, MAPE (%), MAE ratio to naive, MASE (price and log) and directional accuracy, overall and per step.

    `scale` is the training part's one-step naive MAE (`naive_scale`), and
    `log_scale` the same on log prices (`naive_log_scale`); the MASE of
    step k is divided by the same one-step scale, as in Darts and sktime,
    so later steps show their larger errors.
    """
    actual = np.asarray(actual, dtype=np.float64)
    predicted = np.asarray(predicted, dtype=np.float64)
    last = np.asarray(last, dtype=np.float64)
    horizon = actual.shape[1]
    naive = naive_forecast(last, horizon)
    per_step = []
    for step in range(horizon):
        naive_mae = float(np.mean(np.abs(naive[:, step] - actual[:, step])))
        per_step.append(
            {
                "step": step + 1,
                **_step_metrics(actual[:, step], predicted[:, step], last, naive_mae, scale, log_scale),
            }
        )
    overall_naive_mae = float(np.mean(np.abs(naive - actual)))
    overall = _step_metrics(
        actual.ravel(), predicted.ravel(), np.repeat(last, horizon), overall_naive_mae, scale, log_scale
    )
    # The scale-free ratio the gate ranks by (`training.evidence`), so the test split's headline matches it.
    naive_log = float(log_errors(actual, naive).mean())
    overall["log_mae_ratio_to_naive"] = (
        float(log_errors(actual, predicted).mean() / naive_log) if naive_log > 0 else None
    )
    return {**overall, "windows": int(actual.shape[0]), "per_step": per_step}


def compare_with_baselines(
    actual: np.ndarray,
    predicted: np.ndarray,
    label_windows: np.ndarray,
    label_history: np.ndarray,
    drift_history: np.ndarray,
) -> dict[str, dict[str, Any]]:
    """The model's metrics beside the naive and mean-return drift baselines' on the same windows.

    `label_history` is the training rows' label: the MASE scales. The drift's
    mean return comes from `drift_history`, every row before the scored
    part, as the walk-forward backtest takes it: one definition of drift.
    """
    last = label_windows[:, -1]
    scale, log_scale = naive_scale(label_history), naive_log_scale(label_history)
    baselines = unfitted_forecasts(label_windows, actual.shape[1], drift_history)
    return {
        "model": forecast_metrics(actual, predicted, last, scale, log_scale),
        **{name: forecast_metrics(actual, baselines[name], last, scale, log_scale) for name in UNFITTED_BASELINES},
    }
