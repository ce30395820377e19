"""Uploaded price datasets: a checked CSV, its data report and its log of corrections, per name.

Read by the API (uploads, appends, GET /datasets) and by training processes
(the job's data). Each change holds the dataset's locks (`app.datasets.locks`)
from its read to its last write, and writes the CSV, then the report, each
to a temporary file renamed into place. The report records the CSV's size
and sha256, so one left behind by a crash between the renames is rebuilt
from the CSV: by the next read (appends only add lines: the size differs)
or the next append (which hashes the CSV).
See docs/design.md, "Layout: which process runs what" and "Appending rows".
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from app.datasets.locks import SharedLock, file_lock, no_shared_lock
from app.datasets.rows import (
    Correction,
    Skipped,
    appended_lines,
    check_new_rows,
    csv_rows,
    json_rows,
    merge_rows,
    missing_sessions,
    read_back_problem,
    stored_date_format,
)
from training.calendars import calendar_of, check_calendar
from training.data import CleanResult, clean_prices, load_prices, read_price_csv
from training.data_report import data_report
from training.errors import NotFoundError, StockcastError
from training.files import NAME_PATTERN, check_name, now_iso, write_bytes_atomic, write_json_atomic
from training.spec import DATE_COLUMN

logger = logging.getLogger("stockcast.datasets")
LOG_SUFFIX = ".log.jsonl"


class DatasetExistsError(StockcastError):
    """A dataset of that name exists and overwrite was not asked for."""

    status_code = 409


class UnappendableError(StockcastError):
    """The stored CSV would not read the appended rows back as sent (an unusual date format, say)."""

    status_code = 409


@dataclass(frozen=True)
class AppendResult:
    """What an append did. `added_dates` and `replaced_dates` are what forecast scoring looks up."""

    dataset: str
    rows_added: int
    rows_replaced: int
    unchanged: int
    added_dates: list[str]
    replaced_dates: list[str]
    first_new_date: str | None
    last_new_date: str | None
    previous_last_date: str
    last_date: str
    rows: int
    sha256: str
    calendar: str
    missing_sessions: list[str] | None
    corrections: list[Correction] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    zero_volume: list[str] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)

    @property
    def changed_dates(self) -> list[str]:
        """Every date whose row is new or different, oldest first."""
        return sorted({*self.added_dates, *self.replaced_dates})

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON, as the command line prints it."""
        return dataclasses.asdict(self)


def _newline_of(content: bytes) -> bytes:
    end = content.find(b"\n")
    return b"\r\n" if end > 0 and content[end - 1 : end] == b"\r" else b"\n"


class DatasetStore:
    """`<datasets_dir>/<name>.csv` plus `<name>.json` (the data report) and `<name>.log.jsonl` (corrections)."""

    def __init__(self, root: str | Path, shared_lock: SharedLock = no_shared_lock) -> None:
        self.root = Path(root)
        self.shared_lock = shared_lock

    def csv_path(self, name: str) -> Path:
        """Where a dataset's CSV lives; raises NotFoundError if it does not exist."""
        check_name(name, "dataset")
        path = self.root / f"{name}.csv"
        if not path.is_file():
            raise NotFoundError(f"unknown dataset '{name}'; datasets: {self.names()}")
        return path

    def log_path(self, name: str) -> Path:
        """The dataset's log of corrections: one JSON object a line, oldest first."""
        return self.root / f"{check_name(name, 'dataset')}{LOG_SUFFIX}"

    def names(self) -> list[str]:
        """Names of stored datasets."""
        if not self.root.is_dir():
            return []
        return sorted(
            path.stem
            for path in self.root.glob("*.csv")
            if NAME_PATTERN.fullmatch(path.stem) and (self.root / f"{path.stem}.json").is_file()
        )

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        """Hold both locks of one dataset: the deployment's shared one first, then the file lock (one order)."""
        with self.shared_lock(f"dataset:{name}"), file_lock(self.root / f".{name}.lock"):
            yield

    def _stored_report(self, name: str) -> dict[str, Any]:
        return json.loads((self.root / f"{name}.json").read_text(encoding="utf-8"))

    def report(self, name: str) -> dict[str, Any]:
        """The stored report of one dataset, rebuilt first if it does not describe the CSV beside it."""
        path = self.csv_path(name)
        report = self._stored_report(name)
        # Appends only ever add lines, so a CSV renamed into place without its report has another size.
        if report.get("bytes") == path.stat().st_size:
            return report
        with self._locked(name):
            report = self._stored_report(name)
            content = path.read_bytes()
            if report.get("bytes") == len(content):
                return report  # repaired meanwhile
            logger.warning("dataset %s: the report does not match the CSV (an interrupted change); rebuilt", name)
            return self._write_report(name, content, load_prices(content), report)

    def _write_report(
        self, name: str, content: bytes, clean: CleanResult, carried: Mapping[str, Any], **fields: Any
    ) -> dict[str, Any]:
        """The report of `content` (its data report, size and sha256), keeping what `carried` says of its origin."""
        report = {
            **carried,
            **fields,
            "name": name,
            "bytes": len(content),
            "sha256": hashlib.sha256(content).hexdigest(),
            **data_report(clean),
        }
        write_json_atomic(self.root / f"{name}.json", report)
        return report

    def save(
        self, name: str, content: bytes, filename: str, overwrite: bool = False, uploaded_by: str | None = None
    ) -> dict[str, Any]:
        """Check the CSV (raising DataError with the reason), then store it and its report atomically.

        `uploaded_by` names the API key that sent it, kept in the report.
        """
        check_name(name, "dataset")
        exists = DatasetExistsError(f"dataset '{name}' exists; send overwrite=true to replace it")
        if not overwrite and (self.root / f"{name}.csv").is_file():
            raise exists
        clean = load_prices(content)
        self.root.mkdir(parents=True, exist_ok=True)
        with self._locked(name):
            if not overwrite and (self.root / f"{name}.csv").is_file():
                raise exists
            write_bytes_atomic(self.root / f"{name}.csv", content)
            origin = {"filename": filename, "uploaded_at": now_iso(), "uploaded_by": uploaded_by}
            return self._write_report(name, content, clean, origin)

    def append(
        self,
        name: str,
        rows: bytes | Sequence[Mapping[str, Any]],
        *,
        replace: bool = False,
        appended_by: str | None = None,
        calendar: str | None = None,
    ) -> AppendResult:
        """Add rows (a CSV body as bytes, or objects keyed by column) to a dataset: all of them, or none.

        Dates after the last are added; a date already there with the same
        values changes nothing; other values, or a date the dataset lacks
        before its last, raise RowConflictError unless `replace` (then the
        change is logged with `appended_by`). `calendar` sets the trading
        calendar `missing_sessions` follows (kept in the report; XNYS by default).
        """
        check_name(name, "dataset")
        if calendar is not None:
            check_calendar(calendar)
        raw = csv_rows(rows) if isinstance(rows, bytes) else json_rows(rows)
        # Kept in the report only when asked for; otherwise the report's own, else the default.
        asked = {"calendar": calendar} if calendar is not None else {}
        with self._locked(name):
            path = self.csv_path(name)
            content = path.read_bytes()
            report = self._stored_report(name)
            stored = read_price_csv(content)
            existing = clean_prices(stored).frame
            new = check_new_rows(raw, [column for column in existing.columns if column != DATE_COLUMN])
            merge = merge_rows(existing, new.frame, replace=replace, dataset=name)
            stamp = now_iso()
            corrections = [dataclasses.replace(item, by=appended_by, at=stamp) for item in merge.corrections]
            if merge.rows.empty:
                updated, frame = content, existing
                report = self._refreshed_report(name, content, report, asked)
            else:
                updated = self._with_lines(stored, content, merge.rows)
                clean = self._read_back(name, updated, merge.rows)
                # The log first: a correction that lands is always on record (a line whose sha256 never
                # became the dataset's is one a crash cut off).
                self._log(name, corrections, hashlib.sha256(updated).hexdigest())
                write_bytes_atomic(path, updated)
                report = self._write_report(
                    name, updated, clean, report, appended_at=stamp, appended_by=appended_by, **asked
                )
                frame = clean.frame
        previous_last, last = existing[DATE_COLUMN].iloc[-1], frame[DATE_COLUMN].iloc[-1]
        used_calendar = calendar_of(report)
        return AppendResult(
            dataset=name,
            rows_added=len(merge.added),
            rows_replaced=len(merge.replaced),
            unchanged=len(merge.unchanged),
            added_dates=merge.added,
            replaced_dates=merge.replaced,
            first_new_date=merge.added[0] if merge.added else None,
            last_new_date=merge.added[-1] if merge.added else None,
            previous_last_date=previous_last.strftime("%Y-%m-%d"),
            last_date=last.strftime("%Y-%m-%d"),
            rows=len(frame),
            sha256=report["sha256"],
            calendar=used_calendar,
            missing_sessions=missing_sessions(frame[DATE_COLUMN], previous_last, last, used_calendar),
            corrections=corrections,
            skipped=new.skipped,
            zero_volume=new.zero_volume,
            ignored_columns=new.ignored_columns,
        )

    def _refreshed_report(
        self, name: str, content: bytes, report: dict[str, Any], asked: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The report, rewritten only if it lags the CSV (a crash; a report older than the sha256) or `asked`."""
        if report.get("sha256") == hashlib.sha256(content).hexdigest() and asked.items() <= report.items():
            return report
        return self._write_report(name, content, load_prices(content), report, **asked)

    @staticmethod
    def _read_back(name: str, updated: bytes, written: pd.DataFrame) -> CleanResult:
        """`updated` read as training reads it; UnappendableError unless it holds `written` as sent."""
        clean = load_prices(updated)
        problem = read_back_problem(clean.frame, written)
        if problem is not None:
            raise UnappendableError(
                f"dataset '{name}' would not read the appended rows back as sent ({problem}); re-upload"
                " it with YYYY-MM-DD dates and append again. Nothing was appended"
            )
        return clean

    @staticmethod
    def _with_lines(stored: pd.DataFrame, content: bytes, rows: pd.DataFrame) -> bytes:
        """`content` with `rows` appended as lines in its own columns, date format and line ending."""
        newline = _newline_of(content)
        date_format = stored_date_format(stored)
        lines = appended_lines(list(stored.columns), rows, newline=newline.decode(), date_format=date_format)
        separator = b"" if content.endswith(b"\n") else newline
        return content + separator + lines

    def _log(self, name: str, corrections: list[Correction], sha256: str) -> None:
        """Append the corrections to the dataset's log, flushed to disk before the CSV changes."""
        if not corrections:
            return
        lines = "".join(
            json.dumps({**dataclasses.asdict(correction), "sha256": sha256}, sort_keys=True) + "\n"
            for correction in corrections
        )
        with open(self.log_path(name), "a", encoding="utf-8") as handle:
            handle.write(lines)
            handle.flush()
            os.fsync(handle.fileno())

    def corrections(self, name: str) -> list[dict[str, Any]]:
        """Every logged correction of one dataset, oldest first (a line cut off by a crash is left out)."""
        self.csv_path(name)
        path = self.log_path(name)
        if not path.is_file():
            return []
        records = []
        for line in path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                records.append(json.loads(line))
        return records


__all__ = ["AppendResult", "DatasetExistsError", "DatasetStore", "UnappendableError"]
