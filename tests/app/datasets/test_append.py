"""DatasetStore.append on real files: retries, conflicts, logged corrections, all or nothing, locks and repairs."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from app.datasets import DatasetStore, store
from app.datasets.locks import file_lock
from app.datasets.remote import RemoteDatasetStore
from app.datasets.rows import RowConflictError
from tests.helpers import SAMPLE, price_csv, price_row, session_rows, wait_until
from training.errors import DataError, NotFoundError
from training.object_store import ObjectStore


@pytest.fixture(params=["folder", "s3"])
def datasets(request: pytest.FixtureRequest, tmp_path: Path) -> DatasetStore:
    """A store holding `d`: ten XNYS sessions, 2024-12-02 to 2024-12-13; in a folder, or in S3 (a real moto
    server) with the folder as the local copy."""
    datasets: DatasetStore = DatasetStore(tmp_path / "datasets")
    if request.param == "s3":
        datasets = RemoteDatasetStore(tmp_path / "datasets", ObjectStore(request.getfixturevalue("s3_url")))
    datasets.save("d", price_csv(session_rows("2024-12-02", 10)), "d.csv", uploaded_by="uploader")
    return datasets


def files_of(datasets: DatasetStore, name: str = "d") -> tuple[bytes, bytes]:
    return (datasets.root / f"{name}.csv").read_bytes(), (datasets.root / f"{name}.json").read_bytes()


def test_a_new_row_is_added_and_reported(datasets: DatasetStore) -> None:
    result = datasets.append("d", [price_row("2024-12-16", 120.0)], appended_by="feed")
    assert (result.dataset, result.rows_added, result.rows_replaced, result.unchanged) == ("d", 1, 0, 0)
    assert result.added_dates == ["2024-12-16"] and result.changed_dates == ["2024-12-16"]
    assert (result.first_new_date, result.last_new_date) == ("2024-12-16", "2024-12-16")
    assert (result.previous_last_date, result.last_date, result.rows) == ("2024-12-13", "2024-12-16", 11)
    assert result.missing_sessions == [] and result.calendar == "XNYS"
    csv_bytes, _ = files_of(datasets)
    assert result.sha256 == hashlib.sha256(csv_bytes).hexdigest()
    assert csv_bytes.endswith(b"\n2024-12-16,119.5,121,119,120,120,1000\n")
    report = datasets.report("d")
    assert report["sha256"] == result.sha256 and report["rows_kept"] == 11
    assert report["date_range"]["end"] == "2024-12-16"
    assert (report["appended_by"], report["uploaded_by"], report["filename"]) == ("feed", "uploader", "d.csv")


def test_a_retry_is_a_no_op_with_the_same_sha256(datasets: DatasetStore) -> None:
    rows = [price_row("2024-12-16", 120.0), price_row("2024-12-17", 121.0)]
    first = datasets.append("d", rows)
    before = files_of(datasets)
    again = datasets.append("d", rows)
    assert (again.rows_added, again.unchanged, again.added_dates) == (0, 2, [])
    assert again.sha256 == first.sha256 and again.last_date == "2024-12-17"
    assert files_of(datasets) == before


def test_a_conflicting_value_is_a_409_and_nothing_changes(datasets: DatasetStore) -> None:
    before = files_of(datasets)
    with pytest.raises(RowConflictError, match=r"^2024-12-13 is in dataset 'd' with other values \(.*close 109 there"):
        datasets.append("d", [price_row("2024-12-16"), price_row("2024-12-13", 50.0)])
    assert files_of(datasets) == before


def test_replace_corrects_the_row_and_logs_old_new_and_who(datasets: DatasetStore) -> None:
    result = datasets.append("d", [price_row("2024-12-13", 50.0)], replace=True, appended_by="ops")
    assert (result.rows_added, result.rows_replaced, result.replaced_dates) == (0, 1, ["2024-12-13"])
    (correction,) = result.corrections
    assert correction.date == "2024-12-13" and correction.by == "ops" and correction.at is not None
    assert correction.old is not None and correction.old["close"] == 109.0 and correction.new["close"] == 50.0
    (logged,) = datasets.corrections("d")
    assert logged == {**json.loads(json.dumps(correction.__dict__)), "sha256": result.sha256}
    # The file keeps the old row; the corrected one comes later, and a later row of a date wins.
    report = datasets.report("d")
    assert report["rows_kept"] == 10 and report["rows_dropped"]["duplicate_dates"] == 1
    assert report["statistics"]["close"]["min"] == 50.0


def test_a_bad_row_refuses_the_whole_request(datasets: DatasetStore) -> None:
    before = files_of(datasets)
    bad = price_row("2024-12-17") | {"Low": "oops"}
    with pytest.raises(DataError, match=r"column 'low' has values that are not numbers on row\(s\) 1 \(2024-12-17\)"):
        datasets.append("d", [price_row("2024-12-16"), bad])
    assert files_of(datasets) == before
    assert not datasets.log_path("d").exists()


def test_a_csv_body_is_appended(datasets: DatasetStore) -> None:
    result = datasets.append("d", price_csv([price_row("2024-12-16", 120.0)]))
    assert result.added_dates == ["2024-12-16"]


def test_missing_sessions_name_the_days_a_gap_skipped(datasets: DatasetStore) -> None:
    # 2024-12-16 .. 2024-12-20 and 2024-12-23 are sessions; 2024-12-25 is Christmas.
    result = datasets.append("d", [price_row("2024-12-24"), price_row("2024-12-26")])
    assert result.missing_sessions == [
        "2024-12-16",
        "2024-12-17",
        "2024-12-18",
        "2024-12-19",
        "2024-12-20",
        "2024-12-23",
    ]


def test_a_calendar_asked_for_is_kept_for_later_appends(datasets: DatasetStore) -> None:
    first = datasets.append("d", [price_row("2024-12-15")], calendar="24/7")
    assert (first.calendar, first.missing_sessions) == ("24/7", ["2024-12-14"])
    assert datasets.append("d", [price_row("2024-12-17")]).missing_sessions == ["2024-12-16"]


def test_unknown_dataset_is_not_found(datasets: DatasetStore) -> None:
    with pytest.raises(NotFoundError, match="unknown dataset 'nope'"):
        datasets.append("nope", [price_row("2024-12-16")])


def test_the_stored_file_s_own_form_is_kept(tmp_path: Path) -> None:
    """US dates, CRLF, no final newline, an unknown column: appended lines read back beside them."""
    datasets = DatasetStore(tmp_path)
    content = b"Date,Open,High,Low,Close,Volume,OpenInt\r\n12/12/2024,1,2,0.5,1.5,10,0\r\n12/13/2024,1,2,0.5,1.6,10,0"
    datasets.save("us", content, "us.csv")
    row = {"date": "2024-12-16", "open": 1, "high": 2, "low": 0.5, "close": 1.7, "volume": 9}
    result = datasets.append("us", [row])
    assert result.rows == 3 and result.last_date == "2024-12-16"
    assert (tmp_path / "us.csv").read_bytes() == content + b"\r\n12/16/2024,1,2,0.5,1.7,9,\r\n"


def test_the_sample_takes_a_row(tmp_path: Path) -> None:
    datasets = DatasetStore(tmp_path)
    datasets.save("msft", SAMPLE.read_bytes(), SAMPLE.name)
    result = datasets.append("msft", [price_row("2017-11-13", 84.0)])
    assert (result.rows, result.previous_last_date, result.ignored_columns) == (7984, "2017-11-10", ["Adj Close"])


def test_concurrent_appends_all_land(datasets: DatasetStore) -> None:
    # replace=true, so a day that lands after a later one is a logged fill, not a conflict.
    days = [row["Date"] for row in session_rows("2024-12-16", 8)]
    start = threading.Barrier(len(days))
    errors: list[BaseException] = []

    def append(day: str) -> None:
        start.wait()
        try:
            datasets.append("d", [price_row(day)], replace=True)
        except BaseException as error:  # reported below, not lost in the thread
            errors.append(error)

    threads = [threading.Thread(target=append, args=(day,)) for day in days]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    report = datasets.report("d")
    assert report["rows_kept"] == 18 and report["rows_read"] == 18
    assert report["date_range"]["end"] == days[-1]


def _blocked_on_flock(path: Path) -> bool:
    """Whether /proc/locks lists a waiter (`->`) for the file's inode."""
    inode = f":{path.stat().st_ino} "
    lines = Path("/proc/locks").read_text().splitlines()
    return any("->" in line and "FLOCK" in line and inode in line for line in lines)


@pytest.mark.skipif(not Path("/proc/locks").is_file(), reason="needs Linux's /proc/locks to see a waiting lock")
def test_an_append_waits_for_the_dataset_s_file_lock(datasets: DatasetStore) -> None:
    lock = datasets.root / ".d.lock"
    done: list[Any] = []
    with file_lock(lock):
        worker = threading.Thread(target=lambda: done.append(datasets.append("d", [price_row("2024-12-16")])))
        worker.start()
        wait_until(lambda: _blocked_on_flock(lock), "the append to wait for the lock", timeout=30)
        assert done == []
    worker.join()
    assert done[0].added_dates == ["2024-12-16"]


def test_a_crash_between_the_csv_and_the_report_is_repaired(
    datasets: DatasetStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(path: Path, data: Any) -> None:
        raise KeyboardInterrupt  # the process dies after the CSV's rename, before the report's

    with monkeypatch.context() as patched:
        patched.setattr(store, "write_json_atomic", crash)
        with pytest.raises(KeyboardInterrupt):
            datasets.append("d", [price_row("2024-12-16")])
    if isinstance(datasets, RemoteDatasetStore):
        # In the object store the report is the commit point: the change never happened, and a retry makes it.
        assert datasets.report("d")["rows_kept"] == 10
        assert datasets.append("d", [price_row("2024-12-16")]).rows_added == 1
        return
    csv_bytes, _ = files_of(datasets)
    assert json.loads(files_of(datasets)[1])["rows_kept"] == 10
    report = datasets.report("d")
    assert report["rows_kept"] == 11 and report["sha256"] == hashlib.sha256(csv_bytes).hexdigest()
    assert datasets.append("d", [price_row("2024-12-16")]).unchanged == 1


def test_a_report_older_than_the_sha256_is_completed_by_a_no_op_append(datasets: DatasetStore) -> None:
    path = datasets.root / "d.json"
    report = json.loads(path.read_text())
    path.write_text(json.dumps({key: value for key, value in report.items() if key != "sha256"}))
    result = datasets.append("d", [price_row("2024-12-13", 109.0)])
    assert result.unchanged == 1 and json.loads(path.read_text())["sha256"] == result.sha256
