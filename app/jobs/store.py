"""Training job records in SQLite (embedded mode), shared by the API process and its training processes.

WAL mode lets a training process write progress while the API reads; every
write is a short transaction, and each process opens its own connection.
Reads take no lock: under WAL a plain SELECT reads a snapshot while a writer
works, so a poll of GET /jobs never waits behind a progress write.
See docs/design.md, "Training jobs".
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Collection
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from training.errors import StockcastError
from training.files import now_iso

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
FINISHED = (SUCCEEDED, FAILED, CANCELLED)

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    status TEXT NOT NULL,
    request TEXT NOT NULL,
    progress TEXT,
    result TEXT,
    error TEXT,
    pid INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    submitted_by TEXT,
    idempotency_key TEXT
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, seq);
"""
# After the columns exist (a database from before idempotency keys gains the column first).
INDEXES = "CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency ON jobs (idempotency_key);"


class QueueFullError(StockcastError):
    """As many training jobs are waiting as the queue holds."""

    status_code = 429
    # A job takes minutes; asking again sooner only adds load.
    headers: ClassVar[dict[str, str]] = {"Retry-After": "60"}

    def __init__(self, waiting: int) -> None:
        super().__init__(
            f"{waiting} training jobs are waiting to start, the most the queue holds"
            " (STOCKCAST_MAX_QUEUED_JOBS); retry once one has started"
        )


class IdempotencyKeyReusedError(StockcastError):
    """An Idempotency-Key sent again with a different request."""

    status_code = 422


def check_same_request(first: dict[str, Any], again: dict[str, Any]) -> None:
    """Refuse a retry whose request differs from the one its Idempotency-Key first came with."""
    if first != again:
        raise IdempotencyKeyReusedError(
            "Idempotency-Key: this key came with a different training request before (model "
            f"'{first.get('model')}', dataset '{first.get('dataset')}'); send a new key for a new request"
        )


@dataclass(frozen=True)
class Submission:
    """A training request to queue: who sent it, and the rules it is queued under."""

    request: dict[str, Any]
    max_queued: int
    """More waiting jobs than this refuse it (QueueFullError)."""
    submitted_by: str | None = None
    """The API key's name, kept on the record."""
    idempotency_key: str | None = None
    """A retry with the same key answers the job the first call queued."""


@dataclass(frozen=True)
class JobOutcome:
    """How a job ended, as both job stores' `finish` records it.

    `result` None keeps whatever result the training process recorded; `error` says why
    a job failed or was cancelled.
    """

    status: str
    result: dict[str, Any] | None = None
    error: str | None = None


class JobStore:
    """CRUD over the jobs table; every method opens and closes its own connection."""

    def __init__(self, path: str | Path, busy_timeout_seconds: float = 30.0) -> None:
        self.path = Path(path)
        # How long a write waits for another connection's write transaction.
        self.busy_timeout_seconds = busy_timeout_seconds
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as connection, connection:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.executescript(SCHEMA)
            columns = {row[1] for row in connection.execute("PRAGMA table_info(jobs)")}
            if "submitted_by" not in columns:  # a database from before jobs were attributed
                connection.execute("ALTER TABLE jobs ADD COLUMN submitted_by TEXT")
            if "idempotency_key" not in columns:  # a database from before idempotency keys
                connection.execute("ALTER TABLE jobs ADD COLUMN idempotency_key TEXT")
            connection.executescript(INDEXES)

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, timeout=self.busy_timeout_seconds, isolation_level=None)
        connection.row_factory = sqlite3.Row
        return connection

    def _execute(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with closing(self._connect()) as connection:
            connection.execute("BEGIN IMMEDIATE")
            try:
                rows = connection.execute(sql, parameters).fetchall()
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            return rows

    def _query(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """A read: one autocommit SELECT on a WAL snapshot, no write lock (see the module docstring)."""
        with closing(self._connect()) as connection:
            return connection.execute(sql, parameters).fetchall()

    @staticmethod
    def _decode(row: sqlite3.Row) -> dict[str, Any]:
        job = dict(row)
        for key in ("request", "progress", "result"):
            job[key] = json.loads(job[key]) if job[key] else None
        job["cancel_requested"] = bool(job["cancel_requested"])
        job.pop("seq", None)
        job.pop("idempotency_key", None)
        return job

    def create(
        self,
        request: dict[str, Any],
        submitted_by: str | None = None,
        *,
        max_queued: int | None = None,
        idempotency_key: str | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Queue a new job; returns its record and True, or the job `idempotency_key` created before and False.

        One write transaction checks the key, counts the queued jobs against
        `max_queued` (QueueFullError) and inserts, so concurrent submissions
        can neither overfill the queue nor queue one request twice.
        `submitted_by` names the API key that asked for it.
        """
        job_id = uuid.uuid4().hex[:12]
        earlier = None
        with closing(self._connect()) as connection:
            connection.execute("BEGIN IMMEDIATE")
            try:
                if idempotency_key is not None:
                    earlier = connection.execute(
                        "SELECT id, request FROM jobs WHERE idempotency_key = ?", (idempotency_key,)
                    ).fetchone()
                if earlier is None:
                    waiting = connection.execute("SELECT COUNT(*) FROM jobs WHERE status = ?", (QUEUED,)).fetchone()[0]
                    if max_queued is not None and waiting >= max_queued:
                        raise QueueFullError(waiting)
                    connection.execute(
                        "INSERT INTO jobs (id, seq, status, request, created_at, submitted_by, idempotency_key) "
                        "VALUES (?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs), ?, ?, ?, ?, ?)",
                        (job_id, QUEUED, json.dumps(request), now_iso(), submitted_by, idempotency_key),
                    )
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
        if earlier is not None:
            check_same_request(json.loads(earlier["request"]), request)
            return self._created(str(earlier["id"])), False
        return self._created(job_id), True

    def _created(self, job_id: str) -> dict[str, Any]:
        job = self.get(job_id)
        assert job is not None  # committed in this process
        return job

    def get(self, job_id: str) -> dict[str, Any] | None:
        """One job, or None."""
        rows = self._query("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return self._decode(rows[0]) if rows else None

    def list(self, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Newest jobs first, optionally filtered by status."""
        if status is None:
            rows = self._query("SELECT * FROM jobs ORDER BY seq DESC LIMIT ?", (limit,))
        else:
            rows = self._query("SELECT * FROM jobs WHERE status = ? ORDER BY seq DESC LIMIT ?", (status, limit))
        return [self._decode(row) for row in rows]

    def next_queued(self, busy_models: Collection[str] = ()) -> dict[str, Any] | None:
        """The oldest queued job whose model has no job running (jobs of one model run one at a time, in order)."""
        busy = json.dumps(sorted(busy_models))
        rows = self._query(
            "SELECT * FROM jobs WHERE status = ? "
            "AND json_extract(request, '$.model') NOT IN (SELECT value FROM json_each(?)) ORDER BY seq LIMIT 1",
            (QUEUED, busy),
        )
        return self._decode(rows[0]) if rows else None

    def mark_running(self, job_id: str, pid: int) -> bool:
        """Claim a queued job for a training process; False if it was cancelled meanwhile."""
        rows = self._execute(
            "UPDATE jobs SET status = ?, pid = ?, started_at = ? WHERE id = ? AND status = ? RETURNING id",
            (RUNNING, pid, now_iso(), job_id, QUEUED),
        )
        return bool(rows)

    def set_pid(self, job_id: str, pid: int | None) -> None:
        """Record the training process of a running job (used to settle it after a crash)."""
        self._execute("UPDATE jobs SET pid = ? WHERE id = ?", (pid, job_id))

    def set_progress(self, job_id: str, progress: dict[str, Any], attempt: int | None = None) -> None:
        """Record the latest epoch's progress (`attempt` is for the PostgreSQL store: embedded jobs run once)."""
        self._execute("UPDATE jobs SET progress = ? WHERE id = ?", (json.dumps(progress), job_id))

    def set_result(self, job_id: str, result: dict[str, Any], attempt: int | None = None) -> None:
        """Record what a training process produced; the runner marks the job succeeded once it is served."""
        self._execute("UPDATE jobs SET result = ? WHERE id = ?", (json.dumps(result), job_id))

    def finish(self, job_id: str, outcome: JobOutcome, attempt: int | None = None) -> bool:
        """Move a queued or running job to its final state; False if it had already finished.

        `attempt` is for the PostgreSQL store: embedded jobs run once.
        """
        result = json.dumps(outcome.result) if outcome.result is not None else None
        rows = self._execute(
            "UPDATE jobs SET status = ?, result = COALESCE(?, result), error = ?, finished_at = ? "
            "WHERE id = ? AND status IN (?, ?) RETURNING id",
            (outcome.status, result, outcome.error, now_iso(), job_id, QUEUED, RUNNING),
        )
        return bool(rows)

    def request_cancel(self, job_id: str) -> None:
        """Flag a job for cancellation; the runner acts on it."""
        self._execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))

    def cancel_requested(self, job_id: str) -> bool:
        """Whether someone asked to cancel this job."""
        rows = self._query("SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,))
        return bool(rows and rows[0][0])
