"""The tick with the clock moved: each due slot fires once, missed slots coalesce, too few rows skip, and two
queue workers' tickers on the real PostgreSQL still fire each slot once.

Jobs are submitted through the real job backends, neither of which runs
them here (the embedded runner is not started; no queue worker takes the
PostgreSQL queue), so every submitted job stays queued and can be counted.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.datasets import DatasetStore
from app.jobs.backend import EmbeddedJobs, PostgresJobs
from app.schedules.service import set_schedule
from app.schedules.spec import ScheduleSpec
from app.schedules.store import PostgresSchedules, SqliteSchedules
from app.schedules.ticker import Scheduler, submit, tick
from app.schedules.timing import DueSlot
from tests.helpers import make_settings, metadata_only_version, price_csv, scratch_database, session_rows
from training.store import ModelStore

# A Monday before Thanksgiving: XNYS is closed on 2024-11-28 and closes early (18:00 UTC) on 2024-11-29.
ANCHOR = dt.datetime(2024, 11, 25, 12, tzinfo=dt.UTC)
MONDAY, TUESDAY, WEDNESDAY, FRIDAY = "2024-11-25", "2024-11-26", "2024-11-27", "2024-11-29"


def at(text: str) -> dt.datetime:
    """A UTC moment from 'YYYY-MM-DD HH:MM'."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


async def _ignore(*_: Any) -> None:
    return None


def dataset_store(root: Path) -> DatasetStore:
    """A dataset `prices` of 20 XNYS sessions ending 2024-11-22."""
    datasets = DatasetStore(root)
    datasets.save("prices", price_csv(session_rows("2024-10-25", 20)), "prices.csv")
    return datasets


def append_after(datasets: DatasetStore, count: int) -> None:
    """`count` more sessions after the dataset's last row."""
    last = dt.date.fromisoformat(datasets.report("prices")["date_range"]["end"])
    datasets.append("prices", session_rows(last.isoformat(), count + 1, close=200.0)[1:])


@pytest.fixture
def scheduler(tmp_path: Path) -> Iterator[Scheduler]:
    """Embedded: SQLite schedules beside SQLite job records, a runner that is not started."""
    settings = make_settings(tmp_path / "models", tmp_path / "var")
    yield Scheduler(
        SqliteSchedules(settings.jobs_db),
        EmbeddedJobs(settings, _ignore),
        ModelStore(settings.models_dir),
        dataset_store(settings.datasets_dir),
        max_queued=20,
    )


def schedule(scheduler: Scheduler, **spec: Any) -> None:
    """Model `m` retrained on `prices` 45 minutes after every XNYS close, set at ANCHOR."""
    values: dict[str, Any] = {"dataset": "prices", "min_new_rows": 0, "training": {"epochs": 2}, **spec}
    set_schedule(scheduler.schedules, scheduler.models, scheduler.datasets, "m", ScheduleSpec(**values), "ops", ANCHOR)


def fired(runs: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
    return [(run["slot"], run["outcome"], run["slots"]) for run in runs]


def test_a_schedule_fires_once_per_due_slot(scheduler: Scheduler) -> None:
    schedule(scheduler)
    moments_and_slots = [
        ("2024-11-25 21:44", []),
        ("2024-11-25 21:45", [f"{MONDAY}T21:45:00+00:00"]),
        ("2024-11-25 23:00", []),
        ("2024-11-26 21:46", [f"{TUESDAY}T21:45:00+00:00"]),
        ("2024-11-27 21:45", [f"{WEDNESDAY}T21:45:00+00:00"]),
        ("2024-11-28 23:00", []),  # Thanksgiving: no session, no slot
        ("2024-11-29 18:45", [f"{FRIDAY}T18:45:00+00:00"]),  # 45 minutes after the early close
        ("2024-11-29 21:45", []),
    ]
    for moment, slots in moments_and_slots:
        assert fired(tick(scheduler, at(moment))) == [(slot, "submitted", 1) for slot in slots], moment
    jobs = scheduler.jobs.list()
    assert len(jobs) == 4
    assert {job["submitted_by"] for job in jobs} == {"schedule"}
    assert jobs[0]["request"] == {"model": "m", "dataset": "prices", "epochs": 2}
    runs = scheduler.schedules.runs("m")
    assert [run["job_id"] for run in runs] == [job["id"] for job in jobs]


def test_a_service_down_over_three_slots_fires_once_on_return(scheduler: Scheduler) -> None:
    schedule(scheduler)
    assert fired(tick(scheduler, at("2024-11-25 22:00"))) == [(f"{MONDAY}T21:45:00+00:00", "submitted", 1)]
    # Down from Monday evening to Friday evening: Tuesday's, Wednesday's and Friday's slots are one run.
    assert fired(tick(scheduler, at("2024-11-29 20:00"))) == [(f"{FRIDAY}T18:45:00+00:00", "submitted", 3)]
    assert tick(scheduler, at("2024-11-29 23:00")) == []
    assert len(scheduler.jobs.list()) == 2


def test_too_few_new_rows_skip_the_run_with_the_reason(scheduler: Scheduler) -> None:
    schedule(scheduler, min_new_rows=2)
    # The first run has nothing to compare with (no version of `m` trained on `prices`): it runs.
    (first,) = tick(scheduler, at("2024-11-25 22:00"))
    assert (first["outcome"], first["rows"]) == ("submitted", 20)
    append_after(scheduler.datasets, 1)
    (skipped,) = tick(scheduler, at("2024-11-26 22:00"))
    assert skipped["outcome"] == "skipped" and skipped["job_id"] is None
    assert skipped["reason"] == (
        "too few new rows: dataset 'prices' has 21 rows, 1 more than at the last attempt (20); the schedule needs 2"
    )
    append_after(scheduler.datasets, 1)
    (second,) = tick(scheduler, at("2024-11-27 22:00"))
    assert (second["outcome"], second["rows"]) == ("submitted", 22)
    assert [run["outcome"] for run in scheduler.schedules.runs("m")] == ["submitted", "skipped", "submitted"]
    assert len(scheduler.jobs.list()) == 2


def test_the_first_run_counts_new_rows_from_the_newest_version_on_the_dataset(scheduler: Scheduler) -> None:
    # Version 1 of `m` was trained on all 20 rows of `prices` (only the metadata matters here).
    metadata_only_version(scheduler.models.root, "m", 1, data={"dataset": "prices", "rows": 20})
    schedule(scheduler, min_new_rows=1)
    (run,) = tick(scheduler, at("2024-11-25 22:00"))
    assert run["reason"] == (
        "too few new rows: dataset 'prices' has 20 rows, 0 more than at the last attempt (20); the schedule needs 1"
    )


def test_a_disabled_schedule_never_fires(scheduler: Scheduler) -> None:
    schedule(scheduler, enabled=False)
    assert tick(scheduler, at("2024-11-29 22:00")) == []
    assert scheduler.jobs.list() == []


def test_a_ticker_that_died_after_submitting_queues_no_second_job(scheduler: Scheduler) -> None:
    schedule(scheduler)
    stored = scheduler.schedules.require("m")
    # The job went in; the ticker died before it recorded the run.
    earlier = submit(scheduler, "m", ScheduleSpec(**stored["spec"]), 1, DueSlot(at("2024-11-25 21:45"), 1))
    (run,) = tick(scheduler, at("2024-11-25 22:00"))
    assert run["job_id"] == earlier["job_id"]
    assert len(scheduler.jobs.list()) == 1


# Scaled out: two queue workers' tickers on the real PostgreSQL ----------------------------------------------


def tick_together(workers: list[Scheduler], now: dt.datetime) -> list[dict[str, Any]]:
    """Every worker ticks at `now` from its own thread, released at once; the runs they recorded."""
    barrier = threading.Barrier(len(workers))
    results: list[list[dict[str, Any]]] = [[] for _ in workers]

    def tick_one(index: int) -> None:
        barrier.wait()
        results[index] = tick(workers[index], now)

    threads = [threading.Thread(target=tick_one, args=(index,)) for index in range(len(workers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return [run for result in results for run in result]


@pytest.mark.postgres
def test_only_one_ticker_leads_at_a_time() -> None:
    with scratch_database() as url:
        first, second = PostgresSchedules(url), PostgresSchedules(url)
        try:
            with first.leadership() as leading, second.leadership() as also:
                assert (leading, also) == (True, False)
            with second.leadership() as now_leading:
                assert now_leading
        finally:
            first.close()
            second.close()


@pytest.mark.postgres
def test_two_queue_worker_tickers_fire_each_due_slot_once(tmp_path: Path) -> None:
    with scratch_database() as url:
        settings = make_settings(tmp_path / "models", tmp_path / "var", database_url=url)
        datasets = dataset_store(settings.datasets_dir)
        # Each "queue worker" has its own connections, as two processes would.
        workers = [
            Scheduler(
                PostgresSchedules(url), PostgresJobs(settings, _ignore), ModelStore(tmp_path / "models"), datasets, 20
            )
            for _ in range(2)
        ]
        try:
            schedule(workers[0])
            runs = []
            moments = ["2024-11-25 21:45", "2024-11-26 21:50", "2024-11-27 21:45", "2024-11-29 20:00"]
            for moment in moments:
                runs += tick_together(workers, at(moment))
                # No queue worker runs the job; cancelling it frees the model's queueing lock for the next slot.
                for job in workers[0].jobs.list(status="queued"):
                    workers[0].jobs.cancel(job["id"], job)
            assert sorted(fired(runs)) == [
                (f"{MONDAY}T21:45:00+00:00", "submitted", 1),
                (f"{TUESDAY}T21:45:00+00:00", "submitted", 1),
                (f"{WEDNESDAY}T21:45:00+00:00", "submitted", 1),
                (f"{FRIDAY}T18:45:00+00:00", "submitted", 1),
            ]
            jobs = workers[1].jobs.list()
            assert len(jobs) == 4 and {job["submitted_by"] for job in jobs} == {"schedule"}
            assert len(workers[1].schedules.runs("m")) == 4
        finally:
            for worker in workers:
                worker.schedules.close()
                worker.jobs.store.close()  # type: ignore[attr-defined]
