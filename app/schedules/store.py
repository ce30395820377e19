"""Where schedules and their runs live: SQLite beside the job records (embedded), PostgreSQL when scaled out.

Two tables with the same columns in both: `schedules`, one row per model
(the spec as JSON, the calendar, the anchor its slots count from, the
last slot fired and the dataset's rows then), and `schedule_runs`, one row
per fired slot (submitted or skipped, and why), keyed by (model, slot) so
a slot is recorded once. `leadership()` says whether this process may
tick now: always in embedded mode; scaled out, only while it holds a
PostgreSQL advisory lock. See docs/design.md, "Schedules".
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from app.core.config import Settings
from app.core.databases import SqliteFile, SqlStore, postgres_connection, postgres_pool
from training.errors import StockcastError

# SQLite's DDL; PostgreSQL's is migration "0006 schedules" in app.jobs.schema (same columns).
SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS schedules (
    model TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    calendar TEXT NOT NULL,
    revision INTEGER NOT NULL,
    anchor TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    updated_by TEXT,
    last_slot TEXT,
    last_rows INTEGER,
    last_job_id TEXT
);
CREATE TABLE IF NOT EXISTS schedule_runs (
    model TEXT NOT NULL,
    slot TEXT NOT NULL,
    revision INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    reason TEXT,
    job_id TEXT,
    rows INTEGER,
    slots INTEGER NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY (model, slot)
);
"""
RUN_COLUMNS = ("model", "slot", "revision", "outcome", "reason", "job_id", "rows", "slots", "at")
_INSERT_RUN = (
    f"INSERT INTO schedule_runs ({', '.join(RUN_COLUMNS)}) VALUES ({', '.join('?' for _ in RUN_COLUMNS)})"
    " ON CONFLICT (model, slot) DO NOTHING"
)
# The key of the advisory lock a scaled-out ticker holds while it acts (any fixed number).
TICK_LOCK_KEY = 7_263_115_017
# Runs a schedule's answer lists, newest first.
RECENT_RUNS = 10


class ScheduleNotFoundError(StockcastError):
    """The model has no schedule."""

    status_code = 404


class SchedulesUnavailableError(StockcastError):
    """The scaled-out mode's database cannot be reached right now."""

    status_code = 503


class ScheduleStore(SqlStore):
    """Reads and writes of schedules; `transaction` gives a cursor, `placeholder` is how SQL marks a value."""

    @contextmanager
    def leadership(self) -> Iterator[bool]:
        """Whether this process may tick now, held until the block ends (embedded: always)."""
        yield True

    @staticmethod
    def _decode(row: dict[str, Any]) -> dict[str, Any]:
        return {**row, "spec": json.loads(row["spec"])}

    def put(self, model: str, spec: dict[str, Any], calendar: str, by: str | None, now: str) -> dict[str, Any]:
        """Set a model's schedule (a new revision, anchored at `now`, an ISO time); its history of runs stays."""
        with self.transaction() as cursor:
            cursor.execute(
                self._sql(
                    "INSERT INTO schedules"
                    " (model, spec, calendar, revision, anchor, created_at, updated_at, updated_by)"
                    " VALUES (?, ?, ?, 1, ?, ?, ?, ?) ON CONFLICT (model) DO UPDATE SET spec = excluded.spec,"
                    " calendar = excluded.calendar, revision = schedules.revision + 1, anchor = excluded.anchor,"
                    " updated_at = excluded.updated_at, updated_by = excluded.updated_by"
                ),
                (model, json.dumps(spec), calendar, now, now, now, by),
            )
        found = self.get(model)
        assert found is not None  # written above
        return found

    def get(self, model: str) -> dict[str, Any] | None:
        """A model's schedule, or None."""
        rows = self._rows("SELECT * FROM schedules WHERE model = ?", (model,))
        return self._decode(rows[0]) if rows else None

    def require(self, model: str) -> dict[str, Any]:
        """A model's schedule; ScheduleNotFoundError (404) when it has none."""
        found = self.get(model)
        if found is None:
            raise ScheduleNotFoundError(f"model '{model}' has no schedule; set one with PUT /models/{model}/schedule")
        return found

    def all(self) -> list[dict[str, Any]]:
        """Every schedule, by model name."""
        return [self._decode(row) for row in self._rows("SELECT * FROM schedules ORDER BY model")]

    def delete(self, model: str) -> dict[str, Any]:
        """Remove a model's schedule and its runs; returns what it was (ScheduleNotFoundError when none)."""
        found = self.require(model)
        with self.transaction() as cursor:
            cursor.execute(self._sql("DELETE FROM schedule_runs WHERE model = ?"), (model,))
            cursor.execute(self._sql("DELETE FROM schedules WHERE model = ?"), (model,))
        return found

    def record_run(self, run: dict[str, Any], rows_now: int | None) -> bool:
        """Record a fired slot and move the schedule past it; False when the slot was recorded before.

        `rows_now`, the dataset's rows when a run was submitted, is the count
        the next run's new rows are measured from (None: a skipped run leaves it).
        """
        with self.transaction() as cursor:
            cursor.execute(
                self._sql(_INSERT_RUN),
                tuple(run.get(column) for column in RUN_COLUMNS),
            )
            recorded = bool(getattr(cursor, "rowcount", 1))
            cursor.execute(
                self._sql(
                    "UPDATE schedules SET last_slot = ?, last_rows = COALESCE(?, last_rows),"
                    " last_job_id = COALESCE(?, last_job_id) WHERE model = ?"
                ),
                (run["slot"], rows_now, run.get("job_id"), run["model"]),
            )
        return recorded

    def runs(self, model: str, limit: int = RECENT_RUNS) -> list[dict[str, Any]]:
        """A model's latest runs, newest first."""
        return self._rows("SELECT * FROM schedule_runs WHERE model = ? ORDER BY slot DESC LIMIT ?", (model, limit))


class SqliteSchedules(SqliteFile, ScheduleStore):
    """Schedules in the embedded mode's job database (`<data_dir>/jobs.sqlite3`); one connection per call."""

    schema = SQLITE_SCHEMA


class PostgresSchedules(ScheduleStore):
    """Schedules in the scaled-out mode's PostgreSQL, through a small pool; one transaction per call."""

    placeholder = "%s"

    def __init__(self, database_url: str, pool_size: int = 2) -> None:
        # At least two: a tick reads and writes on one connection while `leadership` holds another.
        pool_size = max(pool_size, 2)
        self.pool: Any = postgres_pool(database_url, pool_size, "stockcast-schedules")

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        with postgres_connection(self.pool, SchedulesUnavailableError, "the schedules' database") as connection:
            yield connection

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        with self._connection() as connection, connection.transaction(), connection.cursor() as cursor:
            yield cursor

    @contextmanager
    def leadership(self) -> Iterator[bool]:
        """True while this process holds the tickers' advisory lock (never waits: another holder means False).

        Transaction-scoped: it ends with the block, and with the connection
        if this process dies, so a crashed ticker never keeps the others out.
        """
        with self._connection() as connection, connection.transaction():
            held = connection.execute("SELECT pg_try_advisory_xact_lock(%s) AS held", (TICK_LOCK_KEY,)).fetchone()
            yield bool(held["held"])

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.pool.close()


def open_schedules(settings: Settings) -> ScheduleStore:
    """The schedules of the mode the settings choose: beside the job records, in SQLite or PostgreSQL."""
    if settings.database_url:
        return PostgresSchedules(settings.database_url)
    return SqliteSchedules(settings.jobs_db)


__all__ = [
    "RECENT_RUNS",
    "SQLITE_SCHEMA",
    "TICK_LOCK_KEY",
    "PostgresSchedules",
    "ScheduleNotFoundError",
    "ScheduleStore",
    "SchedulesUnavailableError",
    "SqliteSchedules",
    "open_schedules",
]
