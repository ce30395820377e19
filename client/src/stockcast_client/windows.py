"""Price windows and dataset rows as the service takes them, from DataFrames, arrays or rows.

Pure functions, no I/O, and no import of pandas or numpy: a DataFrame or
an array is recognised by what it can do, so the client installs and
imports without them. Column names are matched as the service matches an
upload's header (case, spaces, `_` and `-` ignored; "Adj Close" is
`adj_close`). Windows go out in the arrays form, the service's faster one.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

DATE_COLUMN = "date"


@functools.lru_cache(maxsize=4096)
def normalise_column(name: object) -> str:
    """A header as the service reads it: lower case without spaces, `_` or `-`; adjusted close is `adj_close`."""
    squashed = re.sub(r"[\s_\-]+", "", str(name).strip().lower())
    return "adj_close" if squashed in ("adjclose", "adjustedclose") else squashed


def is_frame(value: object) -> bool:
    """Whether `value` behaves as a pandas DataFrame."""
    return hasattr(value, "columns") and hasattr(value, "iloc") and hasattr(value, "to_numpy")


def is_array(value: object) -> bool:
    """Whether `value` behaves as a numpy array."""
    return hasattr(value, "ndim") and hasattr(value, "tolist") and not is_frame(value)


def as_date(value: Any) -> dt.date:
    """A date from a `date`, `datetime`, pandas Timestamp, numpy datetime64 or ISO string."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value)[:10])


@dataclass(frozen=True)
class WindowShape:
    """What a served version takes: `length` rows of `features`, and which feature it forecasts."""

    length: int
    features: tuple[str, ...]
    label: str


@dataclass(frozen=True)
class PreparedWindow:
    """A window in the arrays form: its last `length` rows in feature order, and its last row's date if known."""

    values: list[list[float]]
    last_date: dt.date | None
    last_value: float


def prepare_window(window: Any, shape: WindowShape) -> PreparedWindow:
    """The last `shape.length` rows of a DataFrame, a 2-D array or a sequence of rows, in the model's feature order.

    Rows may be mappings keyed by column name (`{"Date", "Open", ...}`) or
    sequences already in feature order. Raises ValueError naming the row
    and column when a value is missing or not a finite number, or when
    there are fewer rows than the window.
    """
    if is_frame(window):
        rows, dates = _frame_rows(window, shape)
    elif is_array(window):
        if window.ndim != 2:
            raise ValueError(f"window: expected a 2-D array (rows, features), got {window.ndim} dimensions")
        rows, dates = window[-shape.length :].tolist(), None
    elif isinstance(window, Sequence) and not isinstance(window, str | bytes):
        rows, dates = _sequence_rows(window[-shape.length :], shape)
    else:
        raise ValueError(f"window: expected a DataFrame, a 2-D array or a list of rows, got {type(window).__name__}")
    if len(rows) < shape.length:
        raise ValueError(f"window: the model takes {shape.length} rows, oldest first; got {len(rows)}")
    # Dates stay as given (numpy datetime64, Timestamps, strings) until one is needed: the last, or an error's.
    values = [_row_values(row, index, shape, dates) for index, row in enumerate(rows)]
    last_date = as_date(dates[-1]) if dates is not None and len(dates) else None
    return PreparedWindow(values, last_date, values[-1][shape.features.index(shape.label)])


def _frame_rows(frame: Any, shape: WindowShape) -> tuple[list[list[Any]], Sequence[Any] | None]:
    columns = {normalise_column(column): column for column in frame.columns}
    missing = [feature for feature in shape.features if feature not in columns]
    if missing:
        raise ValueError(
            f"window: the frame has no column for {missing} (the model's features are {list(shape.features)};"
            f" the frame's columns are {[str(column) for column in frame.columns]})"
        )
    # Column by column, the last rows only: no copy of the frame, whatever its length.
    by_feature = [frame[columns[feature]].to_numpy()[-shape.length :].tolist() for feature in shape.features]
    values = [list(row) for row in zip(*by_feature, strict=True)]
    if DATE_COLUMN in columns:
        return values, frame[columns[DATE_COLUMN]].to_numpy()[-shape.length :]
    if hasattr(frame.index, "to_pydatetime"):
        return values, frame.index.to_numpy()[-shape.length :]
    return values, None


def _sequence_rows(rows: Sequence[Any], shape: WindowShape) -> tuple[list[list[Any]], Sequence[Any] | None]:
    if not rows or not isinstance(rows[0], Mapping):
        return [list(row) for row in rows], None
    values, dates = [], []
    for index, row in enumerate(rows):
        named = {normalise_column(key): value for key, value in row.items()}
        missing = [feature for feature in shape.features if feature not in named]
        if missing:
            raise ValueError(
                f"window row {index}: no value for {missing}; the model's features are {list(shape.features)}"
            )
        values.append([named[feature] for feature in shape.features])
        if named.get(DATE_COLUMN) is not None:
            dates.append(named[DATE_COLUMN])
    return values, dates if len(dates) == len(rows) else None


def _row_values(row: Sequence[Any], index: int, shape: WindowShape, dates: Sequence[Any] | None) -> list[float]:
    if len(row) != len(shape.features):
        where = _where(index, dates)
        raise ValueError(f"{where}: expected {len(shape.features)} values {list(shape.features)}, got {len(row)}")
    try:
        values = [float(value) for value in row]
    except (TypeError, ValueError):
        values = []
    # One sum tells a row of finite numbers (NaN and infinity carry through it); only a row that fails it is
    # looked at value by value, to name the bad one.
    if len(values) == len(row) and math.isfinite(sum(values)):
        return values
    for feature, value in zip(shape.features, row, strict=True):
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{_where(index, dates)}: {feature} is not a number: {value!r}") from None
        if not math.isfinite(number):
            raise ValueError(f"{_where(index, dates)}: {feature} must be a finite number, got {value!r}")
    # Finite values whose sum overflowed.
    return values


def _where(index: int, dates: Sequence[Any] | None) -> str:
    return f"window row {index}" + (f" ({as_date(dates[index])})" if dates is not None else "")


def windows_of(windows: Any) -> list[Any]:
    """The windows of a 3-D array (one per first index) or of a sequence of windows."""
    if is_array(windows):
        if windows.ndim != 3:
            raise ValueError(f"windows: expected a 3-D array (windows, rows, features), got {windows.ndim} dimensions")
        return list(windows)
    return list(windows)


def last_label_value(window: Any, label: str, features: Sequence[str] | None) -> float | None:
    """The window's last value of `label` (the naive forecast) without knowing the model's shape; None if unknown.

    A DataFrame or named rows say it by column name; arrays and plain rows
    only with the feature order, from a description of the model seen earlier.
    """
    try:
        if is_frame(window):
            columns = {normalise_column(column): column for column in window.columns}
            return float(window[columns[label]].iloc[-1]) if label in columns else None
        last = window[-1].tolist() if is_array(window) else window[-1]
        if isinstance(last, Mapping):
            named = {normalise_column(key): value for key, value in last.items()}
            return float(named[label]) if label in named else None
        if features is not None and label in features:
            return float(last[list(features).index(label)])
    except (IndexError, KeyError, TypeError, ValueError):
        return None
    return None


def dataset_rows(rows: Any) -> list[dict[str, Any]]:
    """Rows to append, keyed by column name as the upload's header names them, JSON-ready.

    A DataFrame keeps its column names (the service matches them as an
    upload's header) and adds its date index as `Date` when it has no date
    column; NaN cells become nulls (a row of nulls is a holiday the service
    skips and lists). Dates become ISO strings.
    """
    if is_frame(rows):
        frame = rows
        records: list[dict[str, Any]] = frame.to_dict("records")
        if DATE_COLUMN not in {normalise_column(column) for column in frame.columns} and hasattr(
            frame.index, "to_pydatetime"
        ):
            for record, day in zip(records, frame.index.to_pydatetime(), strict=True):
                record["Date"] = day
    elif isinstance(rows, Mapping):
        records = [dict(rows)]
    else:
        records = [dict(row) for row in rows]
    return [{str(key): _cell(value) for key, value in record.items()} for record in records]


def _cell(value: Any) -> Any:
    if isinstance(value, dt.date):
        return as_date(value).isoformat()
    if type(value).__name__ == "datetime64":
        return str(value)[:10]
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        # A numpy number: its Python value.
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


__all__ = [
    "PreparedWindow",
    "WindowShape",
    "as_date",
    "dataset_rows",
    "is_array",
    "is_frame",
    "last_label_value",
    "normalise_column",
    "prepare_window",
    "windows_of",
]
