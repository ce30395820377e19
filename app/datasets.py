"""Uploaded price datasets: a checked CSV and its data report per name.

Read by the API (uploads, GET /datasets) and by training processes (the
job's data). See docs/design.md, "Layout: which process runs what".
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

from training.data import load_prices
from training.data_report import data_report
from training.errors import NotFoundError, StockcastError
from training.files import NAME_PATTERN, check_name, now_iso, write_json_atomic


class DatasetExistsError(StockcastError):
    """A dataset of that name exists and overwrite was not asked for."""

    status_code = 409


class DatasetStore:
    """`<datasets_dir>/<name>.csv` plus `<name>.json` (the data report)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def csv_path(self, name: str) -> Path:
        """Where a dataset's CSV lives; raises NotFoundError if it does not exist."""
        check_name(name, "dataset")
        path = self.root / f"{name}.csv"
        if not path.is_file():
            raise NotFoundError(f"unknown dataset '{name}'; datasets: {self.names()}")
        return path

    def names(self) -> list[str]:
        """Names of stored datasets."""
        if not self.root.is_dir():
            return []
        return sorted(
            path.stem
            for path in self.root.glob("*.csv")
            if NAME_PATTERN.fullmatch(path.stem) and (self.root / f"{path.stem}.json").is_file()
        )

    def report(self, name: str) -> dict[str, Any]:
        """The stored report of one dataset."""
        self.csv_path(name)
        return json.loads((self.root / f"{name}.json").read_text(encoding="utf-8"))

    def save(
        self, name: str, content: bytes, filename: str, overwrite: bool = False, uploaded_by: str | None = None
    ) -> dict[str, Any]:
        """Check the CSV (raising DataError with the reason), then store it and its report atomically.

        `uploaded_by` names the API key that sent it, kept in the report.
        """
        check_name(name, "dataset")
        if not overwrite and (self.root / f"{name}.csv").is_file():
            raise DatasetExistsError(f"dataset '{name}' exists; send overwrite=true to replace it")
        clean = load_prices(content)
        report = {
            "name": name,
            "filename": filename,
            "bytes": len(content),
            "uploaded_at": now_iso(),
            "uploaded_by": uploaded_by,
            **data_report(clean),
        }
        self.root.mkdir(parents=True, exist_ok=True)
        temporary = self.root / f".{name}.{uuid.uuid4().hex}.csv.tmp"
        temporary.write_bytes(content)
        os.replace(temporary, self.root / f"{name}.csv")
        write_json_atomic(self.root / f"{name}.json", report)
        return report
