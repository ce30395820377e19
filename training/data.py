"""Loading and checking daily OHLCV price tables.

`read_price_csv` is the I/O edge; `clean_prices` is a pure function from a raw
frame to a clean, date-sorted frame plus a record of everything it removed or
flagged, so that the data report and the training metadata can say exactly
what happened to the user's file.
See docs/design.md, "Data path".
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from training import calendars
from training.errors import DataError
from training.spec import DATE_COLUMN, OUTLIER_COLUMN, PRICE_COLUMNS, VOLUME_COLUMN

# User columns are matched to the canonical names of `training.spec` case- and
# space-insensitively ("Adj Close", "adj_close" and "ADJCLOSE" all match).
KNOWN_COLUMNS = (DATE_COLUMN, *PRICE_COLUMNS, VOLUME_COLUMN)
NULL_MARKERS = ("", "null", "nan", "na", "n/a", "none", "-")

# Rows listed in an error message before "and N more"; enough to find the
# problem in a spreadsheet without flooding a JSON response.
MAX_LISTED_ROWS = 5
# Why `check_rows` marks a row as one the cleaner drops ("" for a kept row).
MISSING_VALUES = "missing_values"
NON_POSITIVE_VALUES = "non_positive_values"
# A one-day log return further than this many robust standard deviations from the median is an outlier.
OUTLIER_THRESHOLD = 12.0
# Why `fit_calendar` drops a row: a zero-volume row on a day the calendar is closed.
NON_SESSIONS = "non_sessions"
# A 24/7 model's data must show a weekend row once it spans this many calendar days.
ALWAYS_OPEN_MIN_SPAN_DAYS = 14
# How the training path treats a zero-volume row on a session (a halt), as reports say it.
HALT_HANDLING = (
    "kept as a step (the exchange was open); its volume counts as missing in the volume feature "
    "(encoded as the window's mean, no log1p(0) spike) and its return is left out of the window's "
    "volatility for the bands (a window with no traded row falls to the volatility floor)"
)


@dataclass(frozen=True)
class RowNames:
    """How error messages name the rows of a raw frame: `noun` then each row's `name(index)`."""

    noun: str
    name: Callable[[int], str]


# A file's rows by CSV line: +2, one for the header line, one because lines count from 1.
CSV_LINES = RowNames("CSV line(s)", lambda index: str(index + 2))


@dataclass(frozen=True)
class CleaningSettings:
    """How strict the cleaner is; every field is reported with the data."""

    # Flagged rows stay in the series (deleting a day would join the days
    # around it into one false return); with this on, the frame carries an
    # `outlier` column and training leaves out of its training and
    # early-stopping windows every one that touches an outlier of the label,
    # by the rule refitted on each fit's own training rows (`outlier_flags`).
    mask_outliers: bool = False
    # A one-day log return is an outlier when it lies further than this many
    # robust standard deviations (1.4826 * MAD) from the median return.
    outlier_threshold: float = OUTLIER_THRESHOLD
    # Share of the rows (oldest first) on which the outlier rule's median and
    # MAD are fitted: the training part's share of the split (1 - validation
    # - test), so later data never moves the threshold (no look-ahead).
    outlier_fit_fraction: float = 0.7


@dataclass
class CleanResult:
    """A clean price frame and the account of how it was obtained."""

    frame: pd.DataFrame
    rows_read: int
    dropped: dict[str, int] = field(default_factory=dict)
    flagged: dict[str, list[str]] = field(default_factory=dict)
    outliers: list[dict[str, object]] = field(default_factory=list)
    outlier_rule: dict[str, float] = field(default_factory=dict)
    calendar_fit: dict[str, Any] = field(default_factory=dict)
    """How the rows fit the model's trading calendar (`fit_calendar`); empty before a calendar is chosen."""


def normalise_column_name(name: str) -> str:
    """Map a user's column header to the canonical lower_snake form."""
    squashed = re.sub(r"[\s_\-]+", "", str(name).strip().lower())
    return "adj_close" if squashed in ("adjclose", "adjustedclose") else squashed


def read_price_csv(source: str | Path | IO[bytes] | bytes) -> pd.DataFrame:
    """Read a CSV into a frame of strings, keeping every cell for checking."""
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    try:
        frame = pd.read_csv(source, dtype=str, keep_default_na=False, skipinitialspace=True)
    except FileNotFoundError as error:
        raise DataError(f"file not found: {error.filename}") from error
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DataError(f"not a readable CSV file: {error}") from error
    if not isinstance(frame.index, pd.RangeIndex):
        # pandas moves surplus leading fields into the index when data rows have
        # more fields than the header; reading on would shift every column.
        raise DataError(
            f"rows have more fields than the header's {frame.shape[1]} column(s) {list(frame.columns)}: "
            "look for a trailing comma or thousands separators that are not quoted"
        )
    if frame.shape[1] < 2:
        raise DataError(
            "not a price table: expected comma-separated columns "
            "Date, Open, High, Low, Close[, Adj Close], Volume; "
            f"found {frame.shape[1]} column(s): {list(frame.columns)}"
        )
    return frame


def _listed(indices: pd.Index, row_names: RowNames) -> str:
    shown = ", ".join(row_names.name(int(index)) for index in indices[:MAX_LISTED_ROWS])
    more = len(indices) - MAX_LISTED_ROWS
    return f"{row_names.noun} {shown}" + (f" and {more} more" if more > 0 else "")


def _to_numbers(raw: pd.Series, column: str, row_names: RowNames) -> pd.Series:
    """Parse a column of strings; null markers become NaN, junk is an error."""
    text = raw.astype(str).str.strip().str.replace(",", "", regex=False)
    is_null = text.str.lower().isin(NULL_MARKERS)
    numbers = pd.to_numeric(text.where(~is_null), errors="coerce")
    # "inf" parses as a number but would poison every log-ratio downstream.
    junk = (numbers.isna() | np.isinf(numbers)) & ~is_null
    if junk.any():
        examples = ", ".join(repr(value) for value in raw[junk].head(3))
        raise DataError(
            f"column '{column}' has values that are not numbers on {_listed(raw.index[junk], row_names)}"
            f" (e.g. {examples})"
        )
    return numbers


def _local_timestamp(text: str) -> pd.Timestamp | None:
    try:
        stamp = pd.Timestamp(text)
    except (ValueError, TypeError, OverflowError):
        return None
    return stamp.tz_localize(None) if stamp.tzinfo is not None else stamp


def _parse_dates(text: pd.Series) -> pd.Series:
    """Parse dates to naive timestamps; a UTC offset is dropped, keeping the local date."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            dates = pd.to_datetime(text, errors="coerce")
    except ValueError:
        dates = None
    if dates is None or not pd.api.types.is_datetime64_any_dtype(dates):
        # yfinance exports carry offsets that change with daylight saving
        # (-05:00 then -04:00): pandas refuses them or returns plain objects.
        # Each row's local wall-clock date is the trading day it names.
        dates = pd.to_datetime(text.map(_local_timestamp), errors="coerce")
    return dates.dt.tz_localize(None) if dates.dt.tz is not None else dates


def _robust_outliers(log_returns: np.ndarray, fit_rows: int, threshold: float) -> tuple[np.ndarray, dict[str, float]]:
    """Flag returns far from the median, with median and MAD from the first rows."""
    fitted = log_returns[1:fit_rows]
    fitted = fitted[np.isfinite(fitted)]
    if fitted.size < 10:
        return np.zeros_like(log_returns, dtype=bool), {}
    median = float(np.median(fitted))
    scale = float(1.4826 * np.median(np.abs(fitted - median)))
    # A series that barely moves (coarse ticks) has MAD 0; fall back to the
    # standard deviation so that every return is not an outlier.
    if scale <= 0:
        scale = float(np.std(fitted)) or 1e-12
    flags = np.abs(log_returns - median) > threshold * scale
    flags[0] = False
    return flags, {"median": median, "scale": scale, "threshold": threshold, "fit_rows": fit_rows}


def outlier_flags(label: np.ndarray, fit_rows: int, threshold: float = OUTLIER_THRESHOLD) -> np.ndarray:
    """Rows whose one-day log return of `label` is an outlier, by the rule fitted on its first `fit_rows` rows."""
    prices = np.asarray(label, dtype=np.float64)
    if prices.size < 3:
        return np.zeros(prices.size, dtype=bool)
    log_returns = np.concatenate([[0.0], np.diff(np.log(prices))])
    flags, _ = _robust_outliers(log_returns, max(2, fit_rows), threshold)
    return flags


@dataclass
class CheckedRows:
    """Every row of a raw frame parsed, in the raw frame's order and index, with why the cleaner would drop it."""

    frame: pd.DataFrame
    """The date and every known column present, as timestamps and numbers (NaN for a null cell)."""
    dropped: pd.Series
    """Per row: "" when kept, else `MISSING_VALUES` or `NON_POSITIVE_VALUES`."""


def check_rows(
    raw: pd.DataFrame,
    required: tuple[str, ...] = ("open", "high", "low", "close", "volume"),
    row_names: RowNames = CSV_LINES,
) -> CheckedRows:
    """The row rules of `clean_prices`, row by row: DataError naming the rows for junk, else each row's fate.

    Shared by uploads (through `clean_prices`) and appended rows, which
    name their rows by position and date (`row_names`) instead of CSV line.
    """
    renamed = raw.rename(columns={column: normalise_column_name(column) for column in raw.columns})
    renamed = renamed.loc[:, ~renamed.columns.duplicated()]
    unknown = [column for column in required if column not in KNOWN_COLUMNS]
    if unknown:
        raise DataError(f"column(s) {unknown} cannot be used; known columns are {list(KNOWN_COLUMNS)}")
    needed = (DATE_COLUMN, *dict.fromkeys(required))
    missing = [column for column in needed if column not in renamed.columns]
    if missing:
        raise DataError(
            f"missing column(s) {missing}; found {list(raw.columns)}. "
            "Expected a header like Date,Open,High,Low,Close,Adj Close,Volume "
            "(names are matched ignoring case and spaces)"
        )
    kept = [column for column in KNOWN_COLUMNS if column in renamed.columns]
    table = renamed[kept].copy()
    if len(table) == 0:
        raise DataError("the file has a header but no data rows")

    dates = _parse_dates(table[DATE_COLUMN].astype(str).str.strip())
    bad_dates = dates.isna()
    if bad_dates.any():
        raise DataError(
            f"column 'date' has values that are not dates on {_listed(table.index[bad_dates], row_names)}"
            f" (e.g. {table[DATE_COLUMN][bad_dates].iloc[0]!r}); use YYYY-MM-DD"
        )
    frame = pd.DataFrame({DATE_COLUMN: dates.dt.normalize()})
    for column in kept[1:]:
        frame[column] = _to_numbers(table[column], column, row_names)

    numeric = list(dict.fromkeys(required))
    missing_rows = frame[numeric].isna().any(axis=1)
    prices = [column for column in numeric if column in PRICE_COLUMNS]
    non_positive = (frame[prices] <= 0).any(axis=1)
    if VOLUME_COLUMN in numeric:
        non_positive |= frame[VOLUME_COLUMN] < 0
    # A row with a missing value is counted as missing, whatever else it holds.
    dropped = pd.Series("", index=frame.index, dtype=object)
    dropped[non_positive] = NON_POSITIVE_VALUES
    dropped[missing_rows] = MISSING_VALUES
    return CheckedRows(frame=frame, dropped=dropped)


def clean_prices(
    raw: pd.DataFrame,
    required: tuple[str, ...] = ("open", "high", "low", "close", "volume"),
    settings: CleaningSettings = CleaningSettings(),
) -> CleanResult:
    """Validate and clean a raw price frame; raise DataError with the reason."""
    checked = check_rows(raw, required)
    rows_read = len(checked.frame)
    dropped = {reason: int((checked.dropped == reason).sum()) for reason in (MISSING_VALUES, NON_POSITIVE_VALUES)}
    non_positive = checked.dropped == NON_POSITIVE_VALUES
    flagged: dict[str, list[str]] = {
        NON_POSITIVE_VALUES: [day.strftime("%Y-%m-%d") for day in checked.frame[DATE_COLUMN][non_positive]]
    }
    frame = checked.frame[checked.dropped == ""]

    frame = frame.sort_values(DATE_COLUMN, kind="stable")
    # A re-exported file that repeats a date carries the corrected row last.
    duplicated = frame[DATE_COLUMN].duplicated(keep="last")
    dropped["duplicate_dates"] = int(duplicated.sum())
    frame = frame[~duplicated].reset_index(drop=True)

    if VOLUME_COLUMN in frame.columns:
        zero_volume = frame[VOLUME_COLUMN].fillna(0) == 0
        flagged["zero_volume"] = [day.strftime("%Y-%m-%d") for day in frame[DATE_COLUMN][zero_volume]]

    outliers: list[dict[str, object]] = []
    rule: dict[str, float] = {}
    label_prices = frame["close"].to_numpy(dtype=float) if "close" in frame.columns else None
    if label_prices is not None and len(frame) > 2:
        log_returns = np.concatenate([[0.0], np.diff(np.log(label_prices))])
        fit_rows = max(2, int(len(frame) * settings.outlier_fit_fraction))
        flags, rule = _robust_outliers(log_returns, fit_rows, settings.outlier_threshold)
        for index in np.flatnonzero(flags):
            outliers.append(
                {
                    "date": frame[DATE_COLUMN].iloc[index].strftime("%Y-%m-%d"),
                    "close": float(label_prices[index]),
                    "previous_close": float(label_prices[index - 1]),
                    "log_return": round(float(log_returns[index]), 6),
                }
            )
        dropped["outliers"] = 0
        if settings.mask_outliers:
            frame[OUTLIER_COLUMN] = flags

    if frame.empty:
        raise DataError(f"no usable rows left out of {rows_read}: {dropped}")
    return CleanResult(
        frame=frame.reset_index(drop=True),
        rows_read=rows_read,
        dropped=dropped,
        flagged=flagged,
        outliers=outliers,
        outlier_rule=rule,
    )


def _days(dates: pd.Series) -> list[str]:
    return [day.strftime("%Y-%m-%d") for day in dates]


def _named(days: list[str]) -> str:
    more = len(days) - MAX_LISTED_ROWS
    return ", ".join(days[:MAX_LISTED_ROWS]) + (f" and {more} more" if more > 0 else "")


def fit_calendar(clean: CleanResult, calendar: str) -> CleanResult:
    """The rows a model on `calendar` trains on, or DataError naming the dates that contradict the calendar.

    The data's own calendar is read from its dates: traded rows (volume
    above 0, or any row without a volume column) on weekends mean 24/7, and
    traded rows on other closed days mean another exchange. Zero-volume rows
    on closed days (a KRX export's holiday rows) are dropped: each would
    count as a step the calendar's forecast dates skip. Zero-volume rows on
    sessions (halts) stay; `HALT_HANDLING` says how they are treated.
    Pure; a result already fitted to `calendar` is returned as it is.
    """
    if clean.calendar_fit.get("name") == calendar:
        return clean
    frame = clean.frame
    dates = frame[DATE_COLUMN]
    if VOLUME_COLUMN in frame.columns:
        traded = (frame[VOLUME_COLUMN].fillna(0) > 0).to_numpy()
    else:
        traded = np.ones(len(frame), dtype=bool)
    weekend = (dates.dt.dayofweek >= 5).to_numpy()
    if calendar == calendars.ALWAYS_OPEN:
        span = int((dates.iloc[-1] - dates.iloc[0]).days) if len(frame) else 0
        if span >= ALWAYS_OPEN_MIN_SPAN_DAYS and not weekend.any():
            raise DataError(
                f"calendar '{calendar}' forecasts every day, but the data has no row on a Saturday or Sunday in "
                f"{span} days ({_day_of(dates.iloc[0])} to {_day_of(dates.iloc[-1])}): it follows an exchange's "
                f"calendar; train with that one ({calendars.DEFAULT_CALENDAR} by default, XKRX, XLON, ...)"
            )
        closed = np.zeros(len(frame), dtype=bool)
    else:
        if (weekend & traded).any():
            raise DataError(
                f"the data trades on weekends ({_named(_days(dates[weekend & traded]))}), so it follows "
                f"a '{calendars.ALWAYS_OPEN}' calendar, not {calendar}: train with calendar '{calendars.ALWAYS_OPEN}'"
            )
        closed = ~calendars.is_session(dates.to_numpy().astype("datetime64[D]"), calendar)
        if (closed & traded).any():
            raise DataError(
                f"the data trades on days the {calendar} calendar is closed ({_named(_days(dates[closed & traded]))}): "
                "train with the calendar of the exchange the prices come from"
            )
    halted = ~closed & ~traded if VOLUME_COLUMN in frame.columns else np.zeros(len(frame), dtype=bool)
    kept = frame[~closed].reset_index(drop=True)
    closed_days = _days(dates[closed])
    if len(kept) == 0:
        raise DataError(f"no row of the data falls on a session of the {calendar} calendar")
    record = {
        "name": calendar,
        "inferred": calendars.ALWAYS_OPEN if weekend.any() else "an exchange calendar (no weekend rows)",
        NON_SESSIONS: {
            "count": int(closed.sum()),
            "dates": closed_days,
            "handling": "zero-volume rows on days the calendar is closed: dropped before windowing",
        },
        "zero_volume_sessions": {
            "count": int(halted.sum()),
            "dates": _days(dates[halted]),
            "handling": HALT_HANDLING,
        },
    }
    return CleanResult(
        frame=kept,
        rows_read=clean.rows_read,
        dropped={**clean.dropped, NON_SESSIONS: int(closed.sum())},
        flagged=dict(clean.flagged),
        outliers=[outlier for outlier in clean.outliers if outlier["date"] not in set(closed_days)],
        outlier_rule=dict(clean.outlier_rule),
        calendar_fit=record,
    )


def _day_of(stamp: pd.Timestamp) -> str:
    return str(stamp.strftime("%Y-%m-%d"))


def load_prices(
    source: str | Path | IO[bytes] | bytes,
    required: tuple[str, ...] = ("open", "high", "low", "close", "volume"),
    settings: CleaningSettings = CleaningSettings(),
) -> CleanResult:
    """Read and clean a price CSV in one call (the usual entry point)."""
    return clean_prices(read_price_csv(source), required=required, settings=settings)
