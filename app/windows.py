"""Checking a request's window against the served version, and shaping forecasts.

pydantic has already checked types, finiteness and signs of named fields;
this module checks what only the served version knows: how many rows, which
columns in which order. Errors say what was expected and what arrived.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np

from app.schemas import ForecastStep, Interval, PriceRow
from training.data import PRICE_COLUMNS
from training.errors import StockcastError
from training.features import WindowSpec


class WindowError(StockcastError):
    """The window does not fit the served version's shape."""

    status_code = 422


def expected_shape(spec: WindowSpec) -> str:
    """Human form of the shape a version expects."""
    return f"{spec.window} rows of [{', '.join(spec.features)}]"


def window_to_array(
    window: list[PriceRow] | list[list[float]], spec: WindowSpec, where: str = "window"
) -> tuple[np.ndarray, dt.date | None]:
    """One request window to a (window, features) float64 array plus its last date."""
    if len(window) != spec.window:
        unit = "row" if len(window) == 1 else "rows"
        raise WindowError(f"{where}: expected {expected_shape(spec)}, got {len(window)} {unit}")
    first = window[0]
    if isinstance(first, PriceRow):
        rows: list[PriceRow] = window  # type: ignore[assignment]
        missing = [column for column in spec.features if column not in PriceRow.model_fields]
        if missing:
            raise WindowError(f"{where}: this model needs columns {missing} that rows cannot carry; send arrays")
        values = np.empty((spec.window, len(spec.features)), dtype=np.float64)
        for index, row in enumerate(rows):
            for position, column in enumerate(spec.features):
                value = getattr(row, column)
                if value is None:
                    raise WindowError(f"{where}[{index}].{column}: required by this model, got null")
                values[index, position] = value
        dates = [row.date for row in rows]
        if all(day is not None for day in dates):
            ordered = all(dates[index] < dates[index + 1] for index in range(len(dates) - 1))  # type: ignore[operator]
            if not ordered:
                raise WindowError(f"{where}: dates must be strictly increasing (oldest first)")
            return values, dates[-1]
        if any(day is not None for day in dates):
            raise WindowError(f"{where}: give a date on every row or on none")
        return values, None
    arrays: list[list[float]] = window  # type: ignore[assignment]
    widths = {len(row) for row in arrays}
    if widths != {len(spec.features)}:
        bad = next(index for index, row in enumerate(arrays) if len(row) != len(spec.features))
        raise WindowError(
            f"{where}[{bad}]: expected {len(spec.features)} values [{', '.join(spec.features)}], "
            f"got {len(arrays[bad])} (window shape must be {expected_shape(spec)})"
        )
    values = np.asarray(arrays, dtype=np.float64)
    prices = np.array([column in PRICE_COLUMNS for column in spec.features])
    bad_prices = np.argwhere(values[:, prices] <= 0)
    if bad_prices.size:
        row, position = bad_prices[0]
        column = [column for column in spec.features if column in PRICE_COLUMNS][position]
        raise WindowError(f"{where}[{row}].{column}: prices must be positive, got {values[row, prices][position]}")
    if np.any(values[:, ~prices] < 0):
        row, position = np.argwhere(values[:, ~prices] < 0)[0]
        column = [column for column in spec.features if column not in PRICE_COLUMNS][position]
        raise WindowError(f"{where}[{row}].{column}: must not be negative")
    return values, None


def business_days_after(last: dt.date, horizon: int) -> list[dt.date]:
    """The next `horizon` business days (Mon-Fri) after `last`."""
    offsets = np.busday_offset(np.datetime64(last, "D"), np.arange(1, horizon + 1), roll="backward")
    return [day.astype(dt.date) for day in offsets]


def forecast_steps(
    predicted: np.ndarray,
    bounds: dict[str, tuple[np.ndarray, np.ndarray]],
    last_date: dt.date | None,
) -> list[ForecastStep]:
    """One window's forecast (horizon,) and bounds to response steps."""
    horizon = predicted.shape[0]
    dates: list[dt.date | None] = [None] * horizon
    if last_date is not None:
        dates = list(business_days_after(last_date, horizon))
    values = predicted.tolist()
    bound_lists: dict[str, tuple[list[float], list[float]]] = {
        level: (lower.tolist(), upper.tolist()) for level, (lower, upper) in bounds.items()
    }
    return [
        ForecastStep(
            step=step + 1,
            date=dates[step],
            close=values[step],
            intervals={
                level: Interval(lower=lower[step], upper=upper[step]) for level, (lower, upper) in bound_lists.items()
            },
        )
        for step in range(horizon)
    ]


def interval_bounds(
    inputs: np.ndarray, predicted: np.ndarray, metadata: dict[str, Any], spec: WindowSpec
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Conformal bounds for a batch, using the method the version was calibrated with."""
    intervals = metadata.get("intervals")
    if not intervals:
        return {}
    from training.conformal import bounds_for

    return bounds_for(inputs, predicted, intervals, spec)
