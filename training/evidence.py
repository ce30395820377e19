"""The evidence a backtest records for the promotion gate, from its pooled out-of-sample forecasts.

The loss the tests use is |log(actual / forecast)|: scale-free, so a window
in a high-price year weighs what a window in a low-price year does, and the
verdict is about returns, which is what a trading back end acts on. (The
error over the window's volatility would be scale-free too, but it would
also down-weight turbulent windows, exactly where forecasts matter most.)
The same DM tests in price units are recorded beside them (`price_units`),
for reports; the gate never reads those.

The network must beat naive (step 1 and pooled) and drift (pooled), each by
a one-sided DM test; ridge is tested and reported beside them, not gating.
See docs/design.md, "Promotion gate and the default version".
"""

from __future__ import annotations

from typing import Any

import numpy as np

from training import significance
from training.coverage_check import served_band_coverage

# A forecast at or below zero (a minmax network's can be) has no log error; it
# counts as a miss by this factor, the largest error the loss can record.
LOG_ERROR_FLOOR = 1e-6
LOSS = "|log(actual / forecast)|, mean over steps per window (scale-free)"
# The DM tests the gate requires, every one at its level (an intersection-union test).
GATING = ("vs_naive_step_1", "vs_naive_pooled", "vs_drift_pooled")


def log_errors(actual: np.ndarray, forecast: np.ndarray) -> np.ndarray:
    """|log(actual / forecast)| element by element; forecasts below LOG_ERROR_FLOOR * actual count as that."""
    actual = np.asarray(actual, dtype=np.float64)
    forecast = np.maximum(np.asarray(forecast, dtype=np.float64), LOG_ERROR_FLOOR * actual)
    return np.abs(np.log(actual / forecast))


def _tests(loss: dict[str, np.ndarray], horizon: int) -> dict[str, Any]:
    """One-sided DM tests of the model against naive (step 1, pooled), drift and ridge (pooled), naive vs drift."""
    pooled = {name: values.mean(axis=1) for name, values in loss.items()}
    tests = {
        "vs_naive_step_1": significance.diebold_mariano(loss["model"][:, 0], loss["naive"][:, 0], 1),
        "vs_naive_pooled": significance.diebold_mariano(pooled["model"], pooled["naive"], horizon),
        "vs_drift_pooled": significance.diebold_mariano(pooled["model"], pooled["drift"], horizon),
        # Naive's own evidence against drift: what an answer served by naive says about drift.
        "naive_vs_drift_pooled": significance.diebold_mariano(pooled["naive"], pooled["drift"], horizon),
    }
    if "ridge" in loss:
        tests["vs_ridge_pooled"] = significance.diebold_mariano(pooled["model"], pooled["ridge"], horizon)
    return tests


def gate_evidence(
    forecasts: dict[str, np.ndarray],
    bounds: tuple[np.ndarray, np.ndarray] | None,
    horizon: int,
    band: str,
    level: float,
    significance_level: float,
) -> dict[str, Any]:
    """DM tests on |log error| (and in price units beside), mean losses, and the served band's coverage check.

    `forecasts` maps "actual", "model", "naive", "drift" (and "ridge") to
    (windows, horizon) arrays in time order; `bounds` is the served band at
    `level`, judged as it is served (`training.coverage_check`).
    """
    actual = forecasts["actual"]
    names: list[str] = [name for name in ("model", "naive", "drift", "ridge") if name in forecasts]
    log_loss = {name: log_errors(actual, forecasts[name]) for name in names}
    price_loss = {name: np.abs(forecasts[name] - actual) for name in names}
    naive_log = float(log_loss["naive"].mean())
    evidence: dict[str, Any] = {
        "loss": LOSS,
        "significance_level": significance_level,
        **_tests(log_loss, horizon),
        "log_loss": {name: float(values.mean()) for name, values in log_loss.items()},
        "ratio_to_naive": float(log_loss["model"].mean() / naive_log) if naive_log > 0 else None,
        "price_units": {"loss": "absolute error in price units (reported, not gating)", **_tests(price_loss, horizon)},
        "mae": {name: float(values.mean()) for name, values in price_loss.items()},
    }
    if bounds is not None:
        evidence["coverage_90"] = served_band_coverage(actual, *bounds, band, level, significance_level)
    return evidence
