"""Split-conformal prediction intervals, scale-free.

Residuals are measured as log(actual / forecast) on windows the network did
not train on, so one calibration serves a stock at 20 or at 200. For each
level and step the half-width is the finite-sample-corrected quantile of the
absolute log residuals; the interval is forecast * exp(-+half_width).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

DEFAULT_LEVELS: tuple[float, ...] = (0.8, 0.9, 0.95)


def level_key(level: float) -> str:
    """Key used in JSON for a level: 0.9 -> "90"."""
    return f"{round(level * 100):d}"


def calibrate(actual: np.ndarray, predicted: np.ndarray, levels: tuple[float, ...]) -> dict[str, list[float]]:
    """Half-widths (log units) per level and step from calibration windows."""
    residuals = np.abs(np.log(np.asarray(actual, dtype=np.float64) / np.asarray(predicted, dtype=np.float64)))
    count = residuals.shape[0]
    widths: dict[str, list[float]] = {}
    for level in levels:
        if not 0 < level < 1:
            raise ValueError(f"interval level must be between 0 and 1, got {level}")
        # The (n+1) correction keeps coverage at or above the level for exchangeable data.
        rank = min(math.ceil((count + 1) * level), count)
        widths[level_key(level)] = np.sort(residuals, axis=0)[rank - 1].tolist()
    return widths


def interval_bounds(predicted: np.ndarray, widths: dict[str, list[float]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Lower and upper bounds in price units for each level."""
    bounds = {}
    for key, half in widths.items():
        factor = np.exp(np.asarray(half, dtype=np.float64))
        bounds[key] = (predicted / factor, predicted * factor)
    return bounds


def coverage(actual: np.ndarray, predicted: np.ndarray, widths: dict[str, list[float]]) -> dict[str, dict[str, Any]]:
    """Empirical coverage and mean width (price units) of each level on scored windows."""
    result = {}
    for key, (lower, upper) in interval_bounds(predicted, widths).items():
        inside = (actual >= lower) & (actual <= upper)
        result[key] = {
            "coverage": float(inside.mean()),
            "coverage_per_step": inside.mean(axis=0).tolist(),
            "mean_width": float(np.mean(upper - lower)),
        }
    return result
