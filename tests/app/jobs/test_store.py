"""The embedded (SQLite) job store: reads never wait for a writer; one job per model at a time."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from app.jobs.store import QUEUED, JobStore


def test_reads_do_not_wait_for_a_writer_holding_the_write_lock(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite3")
    job, _ = store.create({"model": "tiny", "dataset": "tiny"})
    # Another process's write transaction in progress (a worker writing progress).
    with closing(sqlite3.connect(store.path, timeout=0, isolation_level=None)) as writer:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("UPDATE jobs SET progress = ? WHERE id = ?", ('{"epoch": 1}', job["id"]))
        # A store that gives up at once: a read that wanted the lock would raise "database is locked".
        impatient = JobStore(store.path, busy_timeout_seconds=0)
        assert impatient.get(job["id"]) == {**job, "progress": None}
        assert [listed["id"] for listed in impatient.list(status=QUEUED)] == [job["id"]]
        assert impatient.next_queued() == job
        assert impatient.cancel_requested(job["id"]) is False
        writer.execute("COMMIT")
    assert store.get(job["id"])["progress"] == {"epoch": 1}  # type: ignore[index]


def test_next_queued_skips_models_with_a_running_job(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite3")
    first_a, _ = store.create({"model": "a", "dataset": "d"})
    second_a, _ = store.create({"model": "a", "dataset": "d"})
    first_b, _ = store.create({"model": "b", "dataset": "d"})
    assert store.next_queued() == first_a
    # While a job of `a` runs, the runner starts `b`'s, not a second `a` that would race it in the gate.
    assert store.mark_running(first_a["id"], pid=1)
    assert store.next_queued(busy_models={"a"}) == first_b
    assert store.next_queued(busy_models={"a", "b"}) is None
    assert store.next_queued() == second_a
