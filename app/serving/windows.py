"""Checking a request's windows against the served version: rows, columns, value ranges, dates.

The API has parsed each window into numbers (checked for type and
finiteness); this module checks what only the served version knows: how
many rows, which columns in which order, and that each value lies where the
features stay finite. Errors say what was expected and what arrived, naming
the window, row and column. See docs/design.md, "Serving path".
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Sequence

import numpy as np

from training.data import PRICE_COLUMNS
from training.errors import StockcastError
from training.features import WindowSpec


class WindowError(StockcastError):
    """The window does not fit the served version's shape."""

    status_code = 422


# What a window's numbers may be. Far wider than any traded price or volume,
# far narrower than where the features (log returns, squares, exp on the way
# back) overflow into infinite or NaN forecasts.
PRICE_RANGE = (1e-6, 1e12)
MAX_VOLUME = 1e15
# Dates whose forecast dates numpy and every calendar can still name.
DATE_RANGE = (dt.date(1900, 1, 1), dt.date(2199, 12, 31))
# The columns a window sent as rows carries, in the order of `RowWindow.values`.
ROW_COLUMNS = ("open", "high", "low", "close", "volume", "adj_close")


class RowWindow:
    """A window sent as named rows: every column of `ROW_COLUMNS` per row, NaN where a row left one out."""

    __slots__ = ("values",)

    def __init__(self, values: np.ndarray) -> None:
        self.values = values
        """(rows, len(ROW_COLUMNS)) float64, oldest row first."""

    def __len__(self) -> int:
        return len(self.values)


# What a request may carry as one window: rows, lists of numbers, or a finite 2-D array in feature order.
Window = RowWindow | list[list[float]] | np.ndarray
# One window's row dates (None where a row has none), or None for a window sent without dates.
WindowDates = Sequence[dt.date | None] | None
# The ufuncs' own reductions: `ndarray.min()` goes through a Python wrapper first.
_smallest, _largest = np.minimum.reduce, np.maximum.reduce


def expected_shape(spec: WindowSpec) -> str:
    """Human form of the shape a version expects."""
    return f"{spec.window} rows of [{', '.join(spec.features)}]"


@functools.lru_cache(maxsize=64)
def _price_columns(features: tuple[str, ...]) -> np.ndarray:
    """True for the price columns among `features` (they must be positive; volume may be zero)."""
    return np.array([column in PRICE_COLUMNS for column in features])


@functools.lru_cache(maxsize=64)
def _bounds(features: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest value each column of `features` may hold (see PRICE_RANGE, MAX_VOLUME)."""
    prices = _price_columns(features)
    return np.where(prices, PRICE_RANGE[0], 0.0), np.where(prices, PRICE_RANGE[1], MAX_VOLUME)


def _in_range(values: np.ndarray, spec: WindowSpec) -> bool:
    """True when every value lies in its column's range (NaN does not): the hot path's whole check.

    The usual window holds nothing but plausible prices and volumes, all
    inside PRICE_RANGE, which lies inside every column's range: one minimum
    and one maximum over the whole array settle it (a NaN makes both
    comparisons false). Only a window with a zero volume, or something
    wrong, is compared column by column.
    """
    if values.size and PRICE_RANGE[0] <= _smallest(values, None) and _largest(values, None) <= PRICE_RANGE[1]:
        return True
    low, high = _bounds(spec.features)
    return bool((values >= low).all() and (values <= high).all())


def window_to_array(
    window: Window, spec: WindowSpec, where: str = "window", dates: WindowDates = None
) -> tuple[np.ndarray, dt.date | None]:
    """One request window to a (window, features) float64 array plus its last date.

    `window` is what the request parsing produced: rows (with their `dates`),
    lists of numbers, or a finite 2-D float array. A valid window costs one
    numpy conversion and one comparison; the element-by-element search for
    what is wrong runs only once something is.
    """
    if len(window) != spec.window:
        unit = "row" if len(window) == 1 else "rows"
        raise WindowError(f"{where}: expected {expected_shape(spec)}, got {len(window)} {unit}")
    if isinstance(window, np.ndarray):
        return _checked_values(window, spec, where), None
    if isinstance(window, RowWindow):
        return _rows_to_array(window, dates or [None] * len(window), spec, where)
    return _arrays_to_array(window, spec, where), None


def windows_to_array(windows: np.ndarray, spec: WindowSpec, where: str = "windows") -> np.ndarray:
    """A finite (n, rows, columns) float64 array of windows, checked as `window_to_array` checks each one.

    The standard protocols decode a whole batch into one array; a valid
    batch costs one shape comparison and one range test, and only a batch
    with something wrong is checked window by window, so that the error
    names the window, row and column just as /predict/batch does.
    """
    if windows.shape[1:] != (spec.window, len(spec.features)) or not _in_range(windows, spec):
        for index in range(len(windows)):
            window_to_array(windows[index], spec, where=f"{where}[{index}]")
    return windows


@functools.lru_cache(maxsize=64)
def _row_positions(features: tuple[str, ...]) -> list[int]:
    """Where each of `features` sits among `ROW_COLUMNS`."""
    return [ROW_COLUMNS.index(column) for column in features]


def _rows_to_array(
    rows: RowWindow, dates: Sequence[dt.date | None], spec: WindowSpec, where: str
) -> tuple[np.ndarray, dt.date | None]:
    missing = [column for column in spec.features if column not in ROW_COLUMNS]
    if missing:
        raise WindowError(f"{where}: this model needs columns {missing} that rows cannot carry; send arrays")
    # The API has checked every named price and volume; only the optional
    # columns can be null, which arrive as NaN.
    values = rows.values[:, _row_positions(spec.features)]
    if np.isnan(values).any():
        index, position = np.argwhere(np.isnan(values))[0]
        raise WindowError(f"{where}[{index}].{spec.features[position]}: required by this model, got null")
    if not _in_range(values, spec):
        _explain_out_of_range(values, spec, where)
    if all(day is not None for day in dates):
        last = dates[-1]
        if not DATE_RANGE[0] <= last <= DATE_RANGE[1]:  # type: ignore[operator]
            raise WindowError(
                f"{where}[{len(dates) - 1}].date: {last} is outside the supported range"
                f" {DATE_RANGE[0]} to {DATE_RANGE[1]}"
            )
        ordered = all(dates[index] < dates[index + 1] for index in range(len(dates) - 1))  # type: ignore[operator]
        if not ordered:
            raise WindowError(f"{where}: dates must be strictly increasing (oldest first)")
        return values, dates[-1]
    if any(day is not None for day in dates):
        raise WindowError(f"{where}: give a date on every row or on none")
    return values, None


def _arrays_to_array(arrays: list[list[float]], spec: WindowSpec, where: str) -> np.ndarray:
    width = len(spec.features)
    bad = next((index for index, row in enumerate(arrays) if len(row) != width), None)
    if bad is not None:
        raise WindowError(
            f"{where}[{bad}]: expected {width} values [{', '.join(spec.features)}], "
            f"got {len(arrays[bad])} (window shape must be {expected_shape(spec)})"
        )
    return _checked_values(np.array(arrays, dtype=np.float64), spec, where)


def _checked_values(values: np.ndarray, spec: WindowSpec, where: str) -> np.ndarray:
    """A (rows, columns) array of finite numbers, checked for width and signs."""
    width = len(spec.features)
    if values.shape[1] != width:
        raise WindowError(
            f"{where}[0]: expected {width} values [{', '.join(spec.features)}], "
            f"got {values.shape[1]} (window shape must be {expected_shape(spec)})"
        )
    if not _in_range(values, spec):
        _explain_out_of_range(values, spec, where)
    return values


def _explain_out_of_range(values: np.ndarray, spec: WindowSpec, where: str) -> None:
    """Raise WindowError naming the first value outside its column's range (the slow path, errors only)."""
    prices = _price_columns(spec.features)
    low, high = _bounds(spec.features)
    for row, position in np.argwhere(~((values >= low) & (values <= high))):
        column, value = spec.features[position], float(values[row, position])
        if prices[position] and value <= 0:
            raise WindowError(f"{where}[{row}].{column}: prices must be positive, got {value}")
        if not prices[position] and value < 0:
            raise WindowError(f"{where}[{row}].{column}: must not be negative")
        raise WindowError(
            f"{where}[{row}].{column}: {value:g} is out of the supported range [{low[position]:g}, {high[position]:g}]"
        )
