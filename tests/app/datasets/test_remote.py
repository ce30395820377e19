"""Datasets in S3 (a real moto server): shared by machines with no common folder, changed all or nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.datasets import DatasetStore
from app.datasets.remote import DatasetChangedError, RemoteDatasetStore
from tests.helpers import price_csv, price_row, session_rows
from training.object_store import ObjectStore


def machine(tmp_path: Path, s3_url: str, label: str) -> RemoteDatasetStore:
    return RemoteDatasetStore(tmp_path / label, ObjectStore(s3_url))


def test_a_dataset_saved_on_one_machine_is_read_and_appended_on_another(s3_url: str, tmp_path: Path) -> None:
    first, second = machine(tmp_path, s3_url, "a"), machine(tmp_path, s3_url, "b")
    first.save("d", price_csv(session_rows("2024-12-02", 10)), "d.csv")
    assert second.names() == ["d"]
    assert second.csv_path("d").read_bytes() == (tmp_path / "a" / "d.csv").read_bytes()
    result = second.append("d", [price_row("2024-12-13", 150.0)], replace=True, appended_by="feed")
    assert result.rows_replaced == 1
    assert first.report("d")["sha256"] == result.sha256
    assert first.csv_path("d").read_bytes().endswith(b"\n2024-12-13,149.5,151,149,150,150,1000\n")
    assert [entry["date"] for entry in first.corrections("d")] == ["2024-12-13"]


def test_a_change_that_lost_the_race_changes_nothing_and_says_so(
    s3_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = machine(tmp_path, s3_url, "a"), machine(tmp_path, s3_url, "b")
    first.save("d", price_csv(session_rows("2024-12-02", 10)), "d.csv")

    def meanwhile(*args: Any) -> bytes:
        # Another replica (no shared lock between them here) appends between this one's read and its write.
        second.append("d", [price_row("2024-12-16", 120.0)])
        return DatasetStore._with_lines(*args)

    monkeypatch.setattr(first, "_with_lines", meanwhile)
    with pytest.raises(DatasetChangedError, match="changed by another replica meanwhile; nothing was changed"):
        first.append("d", [price_row("2024-12-17", 130.0)])
    assert first.report("d")["date_range"]["end"] == "2024-12-16"
    assert b"2024-12-17" not in first.csv_path("d").read_bytes()


def test_an_upload_cut_off_before_its_report_is_no_dataset(s3_url: str, tmp_path: Path) -> None:
    store = machine(tmp_path, s3_url, "a")
    store.objects.put("datasets/ghost/csv/0123.csv", price_csv(session_rows("2024-12-02", 10)))
    assert store.names() == []
    store.save("ghost", price_csv(session_rows("2024-12-02", 10)), "ghost.csv")
    assert store.names() == ["ghost"]
