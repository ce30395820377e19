"""Appended rows judged against a dataset's clean frame, with no I/O: new, unchanged, a correction or a conflict.

Each row passes the upload's row rules (`training.data.check_rows`): junk
is refused, a row of nulls (a holiday in a Yahoo export) is skipped, and a
price <= 0 refuses the request (an upload drops such rows from a long file;
among a few fresh rows it is a feed error). Dates after the dataset's last
are new; an existing date with the same values is unchanged, so a retry is
a no-op; other values, or a date the dataset lacks inside or before its
range, change history: a 409 unless `replace`. Kept rows are written in the
stored file's own columns and date format. See docs/design.md, "Appending rows".
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from training.calendars import sessions_between
from training.data import (
    MISSING_VALUES,
    NON_POSITIVE_VALUES,
    RowNames,
    check_rows,
    normalise_column_name,
    read_price_csv,
)
from training.errors import ConfigError, DataError, StockcastError
from training.spec import DATE_COLUMN, VOLUME_COLUMN

# Values closer than this share are the same: a close re-sent after a trip
# through another tool's float formatting is not a correction.
SAME_VALUE_TOLERANCE = 1e-9
# Conflicting dates named in a 409 before "and N more".
MAX_LISTED_CONFLICTS = 3
# Formats tried, in order, for writing dates as the stored file writes them:
# pandas reads a column of mixed formats as junk.
DATE_FORMATS = ("%Y-%m-%d", "%m/%d/%Y", "%d/%m/%Y", "%Y/%m/%d", "%d.%m.%Y", "%d-%m-%Y", "%Y%m%d", "%Y-%m-%d %H:%M:%S")
ISO_DATE = "%Y-%m-%d"
# Stored rows whose date texts must all fit a format before appended rows use it.
DATE_FORMAT_SAMPLE = 20


class RowConflictError(StockcastError):
    """An appended row would change the dataset's history and `replace` was not asked for."""

    status_code = 409


@dataclass(frozen=True)
class Skipped:
    """A request row left out as an upload leaves it out (a row of nulls)."""

    index: int
    date: str
    reason: str


@dataclass(frozen=True)
class NewRows:
    """The request's rows that count, parsed, and what happened to the others."""

    frame: pd.DataFrame
    """`date` and the dataset's columns, one row per kept request row (indexed by position), oldest first."""
    skipped: list[Skipped] = field(default_factory=list)
    zero_volume: list[str] = field(default_factory=list)
    """Dates of kept rows with volume 0: flagged, as an upload flags them, and kept."""
    ignored_columns: list[str] = field(default_factory=list)
    """Request columns the dataset does not have (they are not written)."""


@dataclass(frozen=True)
class Correction:
    """A change of history: a replaced row (`old` set) or a date added inside the range (`old` None)."""

    date: str
    old: dict[str, float | None] | None
    new: dict[str, float | None]
    by: str | None = None
    at: str | None = None


@dataclass(frozen=True)
class Merge:
    """What an append changes: the rows to write and the dates they add or replace."""

    rows: pd.DataFrame
    """The request rows to write (added and corrected), oldest first."""
    added: list[str]
    replaced: list[str]
    unchanged: list[str]
    corrections: list[Correction]


def _cell_text(value: Any) -> str:
    """A JSON value as the CSV cell text `check_rows` parses: null becomes empty, numbers keep every digit."""
    if value is None:
        return ""
    # Anything else that is not a number (true, a list) reads as junk: `check_rows` refuses it naming the row.
    return value if isinstance(value, str) else repr(value)


def json_rows(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Request rows (objects keyed by the upload's column names) as a raw frame of cell texts."""
    if not rows:
        raise DataError("no rows: send at least one row")
    columns = list(dict.fromkeys(key for row in rows for key in row))
    for index, row in enumerate(rows):
        absent = [column for column in columns if column not in row]
        if absent:
            dated = [str(row[key]) for key in row if normalise_column_name(key) == DATE_COLUMN]
            raise DataError(
                f"row {index} ({dated[0] if dated else 'no date'}) has no {absent}: every row needs the same columns"
            )
    return pd.DataFrame([[_cell_text(row[column]) for column in columns] for row in rows], columns=columns, dtype=str)


def csv_rows(content: bytes) -> pd.DataFrame:
    """A CSV body (header row first, the upload's columns) as a raw frame of cell texts."""
    return read_price_csv(content)


def _date_texts(raw: pd.DataFrame) -> list[str]:
    for column in raw.columns:
        if normalise_column_name(column) == DATE_COLUMN:
            return [str(text).strip() for text in raw[column]]
    return ["no date"] * len(raw)


def _day(stamp: pd.Timestamp) -> str:
    return str(stamp.strftime(ISO_DATE))


def _number(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "null"
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else repr(float(value))


def _values(row: pd.Series, columns: Sequence[str]) -> dict[str, float | None]:
    return {column: None if pd.isna(row[column]) else float(row[column]) for column in columns}


def check_new_rows(raw: pd.DataFrame, columns: Sequence[str]) -> NewRows:
    """The upload's row rules applied to request rows, for a dataset with value `columns`; DataError naming the row.

    Rows are named by position (from 0, in the order sent) and date text.
    """
    dates = _date_texts(raw)
    names = RowNames("row(s)", lambda index: f"{index} ({dates[index]})")
    present = [normalise_column_name(column) for column in raw.columns]
    absent = [column for column in columns if column not in present]
    if absent:
        raise DataError(
            f"missing column(s) {absent}: the dataset has them, so appended rows need them too"
            " (names are matched ignoring case and spaces)"
        )
    wanted = (DATE_COLUMN, *columns)
    ignored = [str(column) for column, canonical in zip(raw.columns, present, strict=True) if canonical not in wanted]
    used = raw[[column for column, canonical in zip(raw.columns, present, strict=True) if canonical in wanted]]
    checked = check_rows(used, row_names=names)
    frame = checked.frame[list(wanted)]
    refused = checked.dropped == NON_POSITIVE_VALUES
    if refused.any():
        position = int(np.flatnonzero(refused.to_numpy())[0])
        index = int(frame.index[position])
        shown = _values(frame.iloc[position], columns)
        values = ", ".join(f"{column} {_number(value)}" for column, value in shown.items())
        raise DataError(
            f"row {names.name(index)}: a price is not positive or the volume is negative ({values}); an upload"
            " drops such rows, an append refuses them: correct the row or leave it out. Nothing was appended"
        )
    missing = checked.dropped == MISSING_VALUES
    skipped = [
        Skipped(int(index), _day(frame.loc[index, DATE_COLUMN]), MISSING_VALUES) for index in frame.index[missing]
    ]
    kept = frame[~missing]
    repeated = kept[DATE_COLUMN].duplicated(keep=False)
    if repeated.any():
        day = kept[DATE_COLUMN][repeated].iloc[0]
        indices = [int(index) for index in kept.index[kept[DATE_COLUMN] == day]]
        raise DataError(f"rows {indices} are all dated {_day(day)}: send one row per date. Nothing was appended")
    kept = kept.sort_values(DATE_COLUMN, kind="stable")
    zero_volume = [_day(day) for day in kept[DATE_COLUMN][kept[VOLUME_COLUMN] == 0]] if VOLUME_COLUMN in kept else []
    return NewRows(frame=kept, skipped=skipped, zero_volume=zero_volume, ignored_columns=ignored)


def _same(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Row-wise: every value equal within SAME_VALUE_TOLERANCE, or both null."""
    return np.isclose(old, new, rtol=SAME_VALUE_TOLERANCE, atol=0.0, equal_nan=True).all(axis=1)


def _same_value(old: float | None, new: float | None) -> bool:
    if old is None or new is None:
        return old is None and new is None
    return math.isclose(old, new, rel_tol=SAME_VALUE_TOLERANCE, abs_tol=0.0)


def _differences(old: dict[str, float | None], new: dict[str, float | None]) -> str:
    changed = [
        f"{column} {_number(old[column])} there, {_number(new[column])} here"
        for column in new
        if not _same_value(old[column], new[column])
    ]
    return "; ".join(changed)


def merge_rows(existing: pd.DataFrame, new: pd.DataFrame, *, replace: bool, dataset: str) -> Merge:
    """Judge each new row against the dataset's clean frame; RowConflictError for history changes unless `replace`."""
    columns = [column for column in new.columns if column != DATE_COLUMN]
    known = new[DATE_COLUMN].isin(existing[DATE_COLUMN])
    first, last = existing[DATE_COLUMN].iloc[0], existing[DATE_COLUMN].iloc[-1]
    stored = existing.set_index(DATE_COLUMN)
    same = np.zeros(len(new), dtype=bool)
    if known.any():
        old = stored.loc[new[DATE_COLUMN][known], columns].to_numpy(dtype=float)
        same[known.to_numpy()] = _same(old, new.loc[known, columns].to_numpy(dtype=float))
    later = (new[DATE_COLUMN] > last).to_numpy()
    changes = ~same & ~later
    corrections = []
    for index in new.index[changes]:
        row = new.loc[index]
        day = row[DATE_COLUMN]
        old_values = _values(stored.loc[day], columns) if day in stored.index else None
        corrections.append(Correction(date=_day(day), old=old_values, new=_values(row, columns)))
    if corrections and not replace:
        raise RowConflictError(_conflict_message(corrections, dataset, first, last))
    written = new[later | changes]
    return Merge(
        rows=written,
        added=[_day(day) for day in new[DATE_COLUMN][later | (changes & ~known.to_numpy())]],
        replaced=[correction.date for correction in corrections if correction.old is not None],
        unchanged=[_day(day) for day in new[DATE_COLUMN][same]],
        corrections=corrections,
    )


def _conflict_message(corrections: list[Correction], dataset: str, first: pd.Timestamp, last: pd.Timestamp) -> str:
    parts = []
    for correction in corrections[:MAX_LISTED_CONFLICTS]:
        if correction.old is not None:
            changed = _differences(correction.old, correction.new)
            parts.append(f"{correction.date} is in dataset '{dataset}' with other values ({changed})")
        else:
            where = "before its first date" if correction.date < _day(first) else "inside its range"
            span = f"its dates run {_day(first)} to {_day(last)}"
            parts.append(f"{correction.date} is not in dataset '{dataset}' and lies {where} ({span})")
    more = len(corrections) - MAX_LISTED_CONFLICTS
    return (
        "; ".join(parts)
        + (f"; and {more} more date(s)" if more > 0 else "")
        + ": these rows change history; send replace=true to write them (they are logged). Nothing was appended"
    )


def date_format_of(texts: Sequence[str], dates: Sequence[pd.Timestamp]) -> str:
    """The strftime format that writes every one of the stored rows' dates as their text; ISO when none does."""
    pairs = [(text.strip(), day) for text, day in zip(texts, dates, strict=True) if not pd.isna(day)]
    for candidate in DATE_FORMATS:
        if pairs and all(day.strftime(candidate) == text for text, day in pairs):
            return candidate
    # Dates with UTC offsets (yfinance): training.data reads ISO dates beside them.
    return ISO_DATE


def stored_date_format(stored: pd.DataFrame) -> str:
    """The date format of a stored file's last rows (raw cell texts, as `read_price_csv` gives them)."""
    tail = stored.tail(DATE_FORMAT_SAMPLE)
    return date_format_of(_date_texts(tail), list(check_rows(tail, required=()).frame[DATE_COLUMN]))


def appended_lines(header: Sequence[str], rows: pd.DataFrame, *, newline: str, date_format: str) -> bytes:
    """`rows` as CSV lines in the stored file's columns: its header order, empty cells for columns rows lack."""
    positions: dict[str, int] = {}
    for position, name in enumerate(header):
        positions.setdefault(normalise_column_name(name), position)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator=newline)
    for record in rows.to_dict("records"):
        cells = [""] * len(header)
        for column, value in record.items():
            if column == DATE_COLUMN:
                cells[positions[column]] = value.strftime(date_format)
            elif column in positions:
                cells[positions[column]] = "" if pd.isna(value) else _number(value)
        writer.writerow(cells)
    return buffer.getvalue().encode("utf-8")


def read_back_problem(stored: pd.DataFrame, written: pd.DataFrame) -> str | None:
    """Why the stored clean frame does not hold the written rows as sent, or None when it does."""
    columns = [column for column in written.columns if column != DATE_COLUMN]
    by_date = stored.set_index(DATE_COLUMN)
    absent = written[DATE_COLUMN][~written[DATE_COLUMN].isin(by_date.index)]
    if not absent.empty:
        return f"{_day(absent.iloc[0])} is not among the dates read back"
    read = by_date.loc[written[DATE_COLUMN], columns].to_numpy(dtype=float)
    differs = ~_same(read, written[columns].to_numpy(dtype=float))
    if differs.any():
        return f"{_day(written[DATE_COLUMN][differs].iloc[0])} reads back with other values"
    return None


def missing_sessions(dates: pd.Series, after: pd.Timestamp, through: pd.Timestamp, calendar: str) -> list[str] | None:
    """Sessions of `calendar` after `after` up to `through` that `dates` lack; None when the calendar cannot say."""
    try:
        expected = sessions_between(after.date(), through.date(), calendar)
    except ConfigError:
        return None
    present = set(dates.dt.date)
    return [day.isoformat() for day in expected if day not in present]
