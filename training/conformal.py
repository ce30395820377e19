"""Split-conformal prediction intervals, scale-free and volatility-adaptive.

Residuals are log(actual / forecast) on windows the network did not train
on, so one calibration serves a stock at any price level. The default score
is studentised: each absolute log residual divided by the label's realised
volatility inside its input window (known at serving time too), so bands
widen in turbulent markets and narrow in calm ones: forecast *
exp(-+quantile * volatility). A level with too few calibration windows for
its finite-sample rank is refused, never clamped. Bands cover each step
(`per_step`) or the whole path at once (`path`).
See docs/design.md, "Intervals (why studentised)".
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from training.config import BANDS, DEFAULT_BAND, DEFAULT_INTERVAL_SCORE, INTERVAL_SCORES
from training.spec import VOLUME_COLUMN, WindowSpec

# A window whose label never moves (a halted or very coarse-ticked price) has
# zero realised volatility; dividing by it would give an infinite score. One
# basis point a day is below any traded asset's volatility, so the floor only
# ever catches those degenerate windows.
VOLATILITY_FLOOR = 1e-4

METHOD_DESCRIPTIONS = {
    "studentized": "split-conformal, |log(actual/forecast)| / realised volatility of the input window",
    "absolute": "split-conformal, |log(actual/forecast)|",
}


def level_key(level: float) -> str:
    """Key used in JSON for a level: 0.9 -> "90"."""
    return f"{round(level * 100):d}"


def window_volatility(inputs: np.ndarray, spec: WindowSpec) -> np.ndarray:
    """Realised volatility (root mean square daily log return) of the label in each raw window."""
    raw = np.asarray(inputs, dtype=np.float64)
    returns = np.diff(np.log(raw[:, :, spec.label_index]), axis=1)
    if VOLUME_COLUMN not in spec.features:
        return np.maximum(np.sqrt(np.mean(returns**2, axis=1)), VOLATILITY_FLOOR)
    # A halted session (volume 0) repeats the close: its zero return is no
    # evidence of calm, so only returns into traded rows count.
    traded = raw[:, 1:, spec.features.index(VOLUME_COLUMN)] > 0
    counts = traded.sum(axis=1)
    squares = np.where(traded, returns**2, 0.0).sum(axis=1)
    return np.maximum(np.sqrt(squares / np.maximum(counts, 1)), VOLATILITY_FLOOR)


def _check_score(score: str) -> None:
    if score not in INTERVAL_SCORES:
        raise ValueError(f"conformal score must be one of {list(INTERVAL_SCORES)}, got '{score}'")


def score_scale(inputs: np.ndarray, spec: WindowSpec, score: str) -> np.ndarray | None:
    """What each window's log residual is divided by: its volatility, or nothing."""
    _check_score(score)
    return window_volatility(inputs, spec) if score == "studentized" else None


def minimum_windows(level: float) -> int:
    """Calibration windows a level needs before its conformal rank exists: ceil(level / (1 - level))."""
    # Rounded first so that 0.9 / 0.1 is 9, not 9.000000000000002.
    return math.ceil(round(level / (1 - level), 9))


def refused_levels(count: int, levels: tuple[float, ...]) -> dict[str, str]:
    """Levels that `count` calibration windows cannot support, with the reason."""
    return {
        level_key(level): f"needs at least {minimum_windows(level)} calibration windows, has {count}"
        for level in levels
        if count < minimum_windows(level)
    }


def calibrate(
    actual: np.ndarray,
    predicted: np.ndarray,
    levels: tuple[float, ...],
    scale: np.ndarray | None = None,
    band: str = DEFAULT_BAND,
) -> dict[str, list[float]]:
    """Half-widths per level and step from calibration windows; refused levels are left out.

    Without `scale` the half-widths are in log units; with it (one positive
    number per window) they are in units of that scale. Each is the
    ceil((n + 1) * level)-th smallest score; with fewer than
    ceil(level / (1 - level)) windows that rank does not exist (the honest
    bound is infinite), so the level is left out rather than clamped. The
    "path" band scores each window by its largest step score over that
    step's median, so one band covers the whole path at the level.
    """
    if band not in BANDS:
        raise ValueError(f"interval band must be one of {list(BANDS)}, got '{band}'")
    residuals = np.abs(np.log(np.asarray(actual, dtype=np.float64) / np.asarray(predicted, dtype=np.float64)))
    if scale is not None:
        residuals = residuals / np.asarray(scale, dtype=np.float64)[:, None]
    count = residuals.shape[0]
    if count == 0:
        raise ValueError("no calibration windows to compute interval widths from")
    step_shape = np.maximum(np.median(residuals, axis=0), 1e-12)
    if band == "path":
        residuals = np.max(residuals / step_shape, axis=1, keepdims=True)
    ordered = np.sort(residuals, axis=0)
    widths: dict[str, list[float]] = {}
    for level in levels:
        if not 0 < level < 1:
            raise ValueError(f"interval level must be between 0 and 1, got {level}")
        # The (n+1) correction keeps coverage at or above the level for exchangeable data.
        rank = math.ceil(round((count + 1) * level, 9))
        if rank > count:
            continue
        quantile = ordered[rank - 1]
        widths[level_key(level)] = (quantile * step_shape if band == "path" else quantile).tolist()
    return widths


def empirical_band(
    train_inputs: np.ndarray, train_futures: np.ndarray, spec: WindowSpec, levels: tuple[float, ...]
) -> dict[str, tuple[list[float], list[float]]]:
    """Baseline band: the training windows' empirical quantiles of each step's log return.

    Level key to (lower, upper) log-return quantiles per step; the band of a
    window is its last value times exp of them. No model, no volatility
    scaling: the sharpness any interval should beat.
    """
    last = np.asarray(train_inputs, dtype=np.float64)[:, -1:, spec.label_index]
    returns = np.log(np.asarray(train_futures, dtype=np.float64) / last)
    return {
        level_key(level): (
            np.quantile(returns, (1 - level) / 2, axis=0).tolist(),
            np.quantile(returns, (1 + level) / 2, axis=0).tolist(),
        )
        for level in levels
    }


def empirical_bounds(
    inputs: np.ndarray, band: dict[str, tuple[list[float], list[float]]], spec: WindowSpec
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Price bounds of the empirical baseline band for raw windows."""
    last = np.asarray(inputs, dtype=np.float64)[:, -1, spec.label_index][:, None]
    return {
        key: (last * np.exp(np.asarray(low)[None, :]), last * np.exp(np.asarray(high)[None, :]))
        for key, (low, high) in band.items()
    }


def stacked_bounds(
    predicted: np.ndarray, widths: dict[str, list[float]], scale: np.ndarray | None = None
) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """Level keys and lower, upper bounds in price units, each shaped (windows, levels, horizon).

    One vectorised pass over every level: the shape serving hands a whole
    micro-batch through at once.
    """
    predicted = np.asarray(predicted, dtype=np.float64)
    keys = tuple(widths)
    if not keys:
        empty = np.empty((predicted.shape[0], 0, predicted.shape[1]))
        return keys, empty, empty
    log_half = np.asarray([widths[key] for key in keys], dtype=np.float64)[None, :, :]
    if scale is not None:
        log_half = log_half * np.asarray(scale, dtype=np.float64)[:, None, None]
    factor = np.exp(log_half)
    return keys, predicted[:, None, :] / factor, predicted[:, None, :] * factor


def interval_bounds(
    predicted: np.ndarray, widths: dict[str, list[float]], scale: np.ndarray | None = None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Lower and upper bounds in price units for each level, shaped like `predicted`."""
    keys, lower, upper = stacked_bounds(predicted, widths, scale)
    return {key: (lower[:, index], upper[:, index]) for index, key in enumerate(keys)}


def coverage_of_bounds(
    actual: np.ndarray, bounds: dict[str, tuple[np.ndarray, np.ndarray]]
) -> dict[str, dict[str, Any]]:
    """Empirical coverage and mean width (price units) of each level's bounds."""
    actual = np.asarray(actual, dtype=np.float64)
    result = {}
    for key, (lower, upper) in bounds.items():
        inside = (actual >= lower) & (actual <= upper)
        result[key] = {
            "coverage": float(inside.mean()),
            "coverage_per_step": inside.mean(axis=0).tolist(),
            "mean_width": float(np.mean(upper - lower)),
            "mean_relative_width": float(np.mean((upper - lower) / actual)),
            "windows": int(actual.shape[0]),
        }
    return result


def coverage(
    actual: np.ndarray, predicted: np.ndarray, widths: dict[str, list[float]], scale: np.ndarray | None = None
) -> dict[str, dict[str, Any]]:
    """Empirical coverage and mean width (price units) of each level on scored windows."""
    return coverage_of_bounds(actual, interval_bounds(predicted, widths, scale))


def calibrate_intervals(
    inputs: np.ndarray,
    actual: np.ndarray,
    predicted: np.ndarray,
    spec: WindowSpec,
    levels: tuple[float, ...],
    score: str = DEFAULT_INTERVAL_SCORE,
    band: str = DEFAULT_BAND,
) -> dict[str, Any]:
    """The `intervals` metadata of a version: score, band, half-widths per level and step, refused levels.

    `inputs` are the raw calibration windows (n, window, features); the
    studentised score takes each window's volatility from them.
    """
    scale = score_scale(inputs, spec, score)
    widths = calibrate(actual, predicted, levels, scale, band=band)
    return {
        "method": METHOD_DESCRIPTIONS[score],
        "score": score,
        "band": band,
        "volatility_floor": VOLATILITY_FLOOR,
        "calibration_windows": len(inputs),
        "half_widths": widths,
        "refused": refused_levels(len(inputs), levels),
        # Each step's scores in ascending order: serving reads a band at any level from them (adaptive bands).
        **({"calibration_scores": sorted_scores(actual, predicted, scale)} if band == "per_step" else {}),
    }


def sorted_scores(actual: np.ndarray, predicted: np.ndarray, scale: np.ndarray | None) -> list[list[float]]:
    """Each step's calibration scores (the same as `calibrate`'s per_step ones), ascending, to 8 digits."""
    residuals = np.abs(np.log(np.asarray(actual, dtype=np.float64) / np.asarray(predicted, dtype=np.float64)))
    if scale is not None:
        residuals = residuals / np.asarray(scale, dtype=np.float64)[:, None]
    return [[float(f"{value:.8g}") for value in column] for column in np.sort(residuals, axis=0).T]


def stacked_bounds_for(
    inputs: np.ndarray, predicted: np.ndarray, intervals_metadata: dict[str, Any], spec: WindowSpec
) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """Level keys and bounds (windows, levels, horizon) for forecasts made from raw windows.

    The single computation serving and evaluation share: `inputs` (n,
    window, features) are the raw windows the forecasts `predicted` (n,
    horizon) came from, and `intervals_metadata` is the version's
    `metadata["intervals"]`. Metadata written before the studentised score
    existed has no "score" key and means the absolute score.
    """
    score = str(intervals_metadata.get("score", "absolute"))
    predicted = np.asarray(predicted, dtype=np.float64)
    if predicted.ndim != 2 or predicted.shape[1] != spec.horizon or len(inputs) != len(predicted):
        raise ValueError(
            f"predicted must be shaped (windows, {spec.horizon}) with one row per input window, "
            f"got {predicted.shape} for {len(inputs)} windows"
        )
    return stacked_bounds(predicted, intervals_metadata["half_widths"], score_scale(inputs, spec, score))


def bounds_for(
    inputs: np.ndarray, predicted: np.ndarray, intervals_metadata: dict[str, Any], spec: WindowSpec
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """`stacked_bounds_for` as a dict: level key ("80", "90", ...) to (lower, upper), each (n, horizon)."""
    keys, lower, upper = stacked_bounds_for(inputs, predicted, intervals_metadata, spec)
    return {key: (lower[:, index], upper[:, index]) for index, key in enumerate(keys)}


def coverage_for(
    inputs: np.ndarray, actual: np.ndarray, predicted: np.ndarray, intervals_metadata: dict[str, Any], spec: WindowSpec
) -> dict[str, dict[str, Any]]:
    """Coverage and mean width of a version's intervals on windows with known outcomes."""
    return coverage_of_bounds(actual, bounds_for(inputs, predicted, intervals_metadata, spec))
