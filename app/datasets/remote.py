"""Datasets in the object store, with the data folder as this machine's copy of each.

Under the store URL's prefix (docs/store.md):

    datasets/<name>/report.json          the data report: the commit point, changed by compare-and-swap
    datasets/<name>/csv/<sha256>.csv     each content the dataset ever had, written before its report
    datasets/<name>/log/<time>-<id>.json the corrections of one append, written before its report

The report names its CSV by sha256, so a change is all or nothing: a writer
that dies before its report leaves an unnamed CSV and the old dataset. Each
change runs the folder store's own code on a fresh local copy (pulled under
the dataset's locks) and then publishes the copy; the report is written
only if nobody else's landed meanwhile (If-Match on its ETag), otherwise
nothing is changed and the caller is told to retry.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from app.core.config import Settings
from app.datasets.locks import SharedLock, no_shared_lock
from app.datasets.store import LOG_SUFFIX, DatasetStore
from training.errors import NotFoundError, StockcastError
from training.files import NAME_PATTERN, check_name, write_bytes_atomic
from training.object_store import ObjectStore, PreconditionFailedError

REPORT = "report.json"


class DatasetChangedError(StockcastError):
    """Another replica changed the dataset between this change's read and its write: nothing was changed."""

    status_code = 409


class RemoteDatasetStore(DatasetStore):
    """The folder store's behaviour, with the object store as the truth and `root` as a local copy."""

    def __init__(self, root: str | Path, objects: ObjectStore, shared_lock: SharedLock = no_shared_lock) -> None:
        super().__init__(root, shared_lock=shared_lock)
        self.objects = objects
        # The corrections of the change in progress, per dataset (one change per dataset at a time: its locks).
        self._pending_logs: dict[str, list[dict[str, Any]]] = {}

    @staticmethod
    def _prefix(name: str) -> str:
        return f"datasets/{check_name(name, 'dataset')}/"

    def names(self) -> list[str]:
        """Names of stored datasets (those with a report in the object store)."""
        return sorted(
            name
            for name in self.objects.children("datasets/")
            if NAME_PATTERN.fullmatch(name) and self.objects.get(self._prefix(name) + REPORT) is not None
        )

    def csv_path(self, name: str) -> Path:
        """The local copy of a dataset's CSV, brought up to date first; NotFoundError if there is none."""
        self._pull(name)
        return super().csv_path(name)

    def report(self, name: str) -> dict[str, Any]:
        """The dataset's report as the object store holds it (its local copy refreshed)."""
        self._pull(name)
        self.csv_path(name)
        return self._stored_report(name)

    def save(
        self, name: str, content: bytes, filename: str, overwrite: bool = False, uploaded_by: str | None = None
    ) -> dict[str, Any]:
        """As the folder store: checked, then stored whole or not at all (see the module's docstring)."""
        self._pull(name)
        return super().save(name, content, filename, overwrite=overwrite, uploaded_by=uploaded_by)

    def corrections(self, name: str) -> list[dict[str, Any]]:
        """Every logged correction of one dataset, oldest first."""
        self.csv_path(name)
        records: list[dict[str, Any]] = []
        prefix = self._prefix(name) + "log/"
        for item in sorted(self.objects.listing(prefix), key=lambda listed: listed.key):
            found = self.objects.get(item.key)
            if found is not None:
                with contextlib.suppress(json.JSONDecodeError):
                    records.extend(json.loads(found.body))
        return records

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        """The folder store's locks, a fresh local copy for the change to work on, and its publication."""
        with super()._locked(name):
            etag = self._pull(name)
            before = self._local_report_bytes(name)
            self._pending_logs[name] = []
            try:
                yield
                if self._local_report_bytes(name) != before:
                    self._publish(name, etag)
            except BaseException:
                # The local copy may hold half a change: put back what the object store holds.
                self._forget(name)
                with contextlib.suppress(StockcastError):
                    self._pull(name)
                raise
            finally:
                self._pending_logs.pop(name, None)

    def _log(self, name: str, corrections: list[Any], sha256: str) -> None:
        """Keep the corrections for `_publish`, which writes them before the report (as the folder store does)."""
        super()._log(name, corrections, sha256)
        self._pending_logs[name] = [{**dataclasses.asdict(item), "sha256": sha256} for item in corrections]

    def _publish(self, name: str, etag: str | None) -> None:
        """The CSV, the corrections, then the report by compare-and-swap: the report makes the change visible."""
        csv = (self.root / f"{name}.csv").read_bytes()
        report_body = self._local_report_bytes(name) or b"{}"
        report = json.loads(report_body)
        self.objects.put(f"{self._prefix(name)}csv/{report['sha256']}.csv", csv)
        corrections = self._pending_logs.get(name)
        if corrections:
            log_key = f"{self._prefix(name)}log/{time.time_ns():020d}-{uuid.uuid4().hex}.json"
            self.objects.put(log_key, json.dumps(corrections).encode(), create_only=True)
        try:
            self.objects.put(self._prefix(name) + REPORT, report_body, create_only=etag is None, if_match=etag)
        except PreconditionFailedError as error:
            raise DatasetChangedError(
                f"dataset '{name}' was changed by another replica meanwhile; nothing was changed, send it again"
            ) from error

    def _pull(self, name: str) -> str | None:
        """Make the local copy what the object store holds (no copy when it holds none); the report's ETag."""
        found = self.objects.get(self._prefix(name) + REPORT)
        if found is None:
            self._forget(name)
            return None
        if self._local_report_bytes(name) == found.body and (self.root / f"{name}.csv").is_file():
            return found.etag
        report = json.loads(found.body)
        csv = self.objects.get(f"{self._prefix(name)}csv/{report['sha256']}.csv")
        if csv is None:
            raise NotFoundError(f"dataset '{name}': its CSV {report['sha256']} is missing from the store")
        self.root.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(self.root / f"{name}.csv", csv.body)
        write_bytes_atomic(self.root / f"{name}.json", found.body)
        return found.etag

    def _local_report_bytes(self, name: str) -> bytes | None:
        try:
            return (self.root / f"{name}.json").read_bytes()
        except OSError:
            return None

    def _forget(self, name: str) -> None:
        for suffix in (".json", ".csv", LOG_SUFFIX):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.root / f"{name}{suffix}")


def open_datasets(settings: Settings, shared_lock: SharedLock = no_shared_lock) -> DatasetStore:
    """The folder store at `datasets_dir`, or with `store_url` the object store copied into it."""
    if not settings.store_url:
        return DatasetStore(settings.datasets_dir, shared_lock=shared_lock)
    return RemoteDatasetStore(settings.datasets_dir, ObjectStore(settings.store_url), shared_lock=shared_lock)
