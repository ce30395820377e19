"""Two real queue workers (`python -m app.worker`) on the real PostgreSQL tick one schedule: its due slot fires
once, as one job, however many workers tick; and it stands for the slots missed before they started."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import psycopg
import pytest

from app.datasets import DatasetStore
from app.schedules.service import set_schedule
from app.schedules.spec import ScheduleSpec, ScheduleWhen
from app.schedules.store import PostgresSchedules
from tests.helpers import WorkerProcess, metadata_only_version, price_csv, scratch_database, session_rows, wait_until
from training.store import ModelStore

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]
# How long both workers keep ticking after the first run, to show that no second one comes: many ticks each.
OBSERVE_SECONDS = 3.0


def test_two_queue_workers_fire_a_due_slot_once(tmp_path: Path) -> None:
    with scratch_database() as url:
        models = tmp_path / "models"
        metadata_only_version(models, "m", 1, calendar="24/7")
        datasets = DatasetStore(tmp_path / "var" / "datasets")
        datasets.save("prices", price_csv(session_rows("2024-10-01", 20)), "prices.csv")
        now = dt.datetime.now(dt.UTC)
        # Slots every day, twelve hours away from now: the last one is half a day old, the next half a day off.
        minutes = (now.hour * 60 + now.minute + 12 * 60) % (24 * 60)
        spec = ScheduleSpec(dataset="prices", when=ScheduleWhen(after_close_minutes=minutes), min_new_rows=0)
        schedules = PostgresSchedules(url)
        try:
            # Set three days ago: three slots passed while no worker ran.
            set_schedule(schedules, ModelStore(models), datasets, "m", spec, "ops", now - dt.timedelta(days=3))
            env = {"STOCKCAST_DATABASE_URL": url, "STOCKCAST_SCHEDULE_TICK_SECONDS": "0.2"}
            workers = [WorkerProcess(models, tmp_path, name, **env) for name in ("a", "b")]
            for worker in workers:
                worker.start()
            try:
                (run,) = wait_until(lambda: schedules.runs("m"), "the schedule's run", timeout=120)
                deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=OBSERVE_SECONDS)
                wait_until(lambda: dt.datetime.now(dt.UTC) > deadline, "the observation period")
                assert [item["slot"] for item in schedules.runs("m")] == [run["slot"]]
            finally:
                for worker in workers:
                    worker.stop()
            for worker in workers:
                assert "tick failed" not in worker.log_path.read_text(errors="replace")
            assert (run["outcome"], run["slots"]) == ("submitted", 3)
            with psycopg.connect(url) as connection:
                jobs = connection.execute("SELECT id, submitted_by FROM stockcast_jobs").fetchall()
            assert jobs == [(run["job_id"], "schedule")]
        finally:
            schedules.close()
