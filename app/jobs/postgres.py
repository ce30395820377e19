"""Training job records in PostgreSQL: the same records as `app.jobs.store`, readable by every replica.

The methods mirror the SQLite `JobStore` so that the training process writes
progress the same way in both modes. Writes from a run carry its attempt
number: after a queue worker died and its job was retried elsewhere, a late
write from the old run (a training process that outlived its queue worker)
changes nothing. See docs/design.md, "Scaled-out jobs".
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from app.jobs.store import QUEUED, RUNNING, JobOutcome, QueueFullError, check_same_request
from training.errors import StockcastError
from training.files import now_iso

# Any fixed number: the key of the advisory lock under which submissions are checked and inserted.
SUBMIT_LOCK_KEY = 7_263_115_016
# Channel on which queue workers announce a new version or alias move (payload: the model name).
MODELS_CHANNEL = "stockcast_models"
# Longest wait for a named lock (`advisory_lock`): far more than a change to a dataset takes.
ADVISORY_LOCK_SECONDS = 30.0

COLUMNS = (
    "id, status, request, progress, result, error, attempts, worker, cancel_requested, "
    "created_at, started_at, finished_at, submitted_by"
)


class DatabaseUnavailableError(StockcastError):
    """The job database cannot be reached right now (raised by the API side, which answers 503 until it is back)."""

    status_code = 503


class LockBusyError(StockcastError):
    """A named lock stayed held by another process for longer than the wait allows."""

    status_code = 503


def advisory_key(name: str) -> int:
    """The 64-bit advisory lock key of a name: the same in every process, whatever its hash seed."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


class PostgresJobStore:
    """CRUD over `stockcast_jobs` through a small connection pool that reconnects after a database restart."""

    def __init__(
        self, database_url: str, pool_size: int = 4, wait_seconds: float = 10.0, reconnect_seconds: float = 300.0
    ) -> None:
        self.database_url = database_url
        # How long a call waits for a connection before it fails (the API answers 503 then).
        self.wait_seconds = wait_seconds
        self.pool = ConnectionPool(
            database_url,
            min_size=1,
            max_size=pool_size,
            # The pool's own reconnection backs off up to this long; after it gives up, the next
            # call reconnects at once, so a short one means a quick recovery once the database is back.
            reconnect_timeout=reconnect_seconds,
            kwargs={"autocommit": True, "row_factory": dict_row, "connect_timeout": max(1, round(wait_seconds))},
            # Checked when taken from the pool: a connection broken by a
            # database restart is replaced instead of failing the caller.
            check=ConnectionPool.check_connection,
            open=True,
            name="stockcast-jobs",
        )

    def close(self) -> None:
        """Close every pooled connection."""
        self.pool.close()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection in autocommit mode (use `connection.transaction()` for several statements)."""
        with self.pool.connection(timeout=self.wait_seconds) as connection:
            yield connection

    def _one(self, sql: str, parameters: tuple[Any, ...]) -> dict[str, Any] | None:
        with self.connection() as connection:
            row = connection.execute(sql, parameters).fetchone()  # type: ignore[arg-type]
        return dict(row) if row is not None else None

    @contextmanager
    def advisory_lock(self, name: str, wait_seconds: float = ADVISORY_LOCK_SECONDS) -> Iterator[None]:
        """Hold the advisory lock keyed on `name` until the block ends: one holder across every process.

        Transaction-scoped, so the lock ends with the transaction whatever
        happens (a pooled connection never goes back holding it). Waiting
        longer than `wait_seconds` raises LockBusyError; an unreachable
        database, DatabaseUnavailableError.
        """
        with contextlib.ExitStack() as held:
            try:
                connection = held.enter_context(self.connection())
                held.enter_context(connection.transaction())
                timeout = f"{round(wait_seconds * 1000)}ms"
                connection.execute("SELECT set_config('lock_timeout', %s, true)", (timeout,))
                connection.execute("SELECT pg_advisory_xact_lock(%s)", (advisory_key(name),))
            except psycopg.errors.LockNotAvailable as error:
                raise LockBusyError(f"'{name}' is being changed by another request; retry shortly") from error
            except (psycopg.OperationalError, PoolTimeout) as error:
                raise DatabaseUnavailableError(f"the job database is unreachable: {error}") from error
            yield

    def ping(self) -> None:
        """Raise if the database cannot answer a query within a few seconds (for /ready)."""
        with self.pool.connection(timeout=min(self.wait_seconds, 3)) as connection:
            connection.execute("SELECT 1")

    # Creating ----------------------------------------------------------------

    @staticmethod
    def insert(
        connection: psycopg.Connection[Any],
        request: dict[str, Any],
        submitted_by: str | None = None,
        idempotency_key: str | None = None,
    ) -> str:
        """Insert a queued record on the caller's connection (inside its transaction); returns the job id."""
        job_id = uuid.uuid4().hex[:12]
        connection.execute(
            "INSERT INTO stockcast_jobs (id, status, model, request, created_at, submitted_by, idempotency_key) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (job_id, QUEUED, str(request["model"]), Jsonb(request), now_iso(), submitted_by, idempotency_key),
        )
        return job_id

    @staticmethod
    def admit(
        connection: psycopg.Connection[Any], request: dict[str, Any], max_queued: int, idempotency_key: str | None
    ) -> dict[str, Any] | None:
        """Inside the caller's transaction: the job an earlier submission with this key created, or None to go on.

        Takes a transaction-scoped advisory lock first, so that submissions on
        every replica are checked one at a time: the queue bound and the key
        hold under any concurrency. Raises QueueFullError when the queue is full.
        """
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (SUBMIT_LOCK_KEY,))
        if idempotency_key is not None:
            row = connection.execute(
                f"SELECT {COLUMNS} FROM stockcast_jobs WHERE idempotency_key = %s", (idempotency_key,)
            ).fetchone()
            if row is not None:
                earlier = dict(row)  # type: ignore[call-overload]
                check_same_request(earlier["request"], request)
                return earlier
        counted = connection.execute("SELECT COUNT(*) AS waiting FROM stockcast_jobs WHERE status = %s", (QUEUED,))
        waiting = int(counted.fetchone()["waiting"])  # type: ignore[index]
        if waiting >= max_queued:
            raise QueueFullError(waiting)
        return None

    @staticmethod
    def link(connection: psycopg.Connection[Any], job_id: str, queue_job_id: int) -> None:
        """Remember which procrastinate job runs this record (same transaction as `insert`)."""
        connection.execute("UPDATE stockcast_jobs SET queue_job_id = %s WHERE id = %s", (queue_job_id, job_id))

    # Reading -----------------------------------------------------------------

    def get(self, job_id: str) -> dict[str, Any] | None:
        """One job, or None."""
        return self._one(f"SELECT {COLUMNS} FROM stockcast_jobs WHERE id = %s", (job_id,))

    def queue_job_id(self, job_id: str) -> int | None:
        """The procrastinate job id of a record."""
        row = self._one("SELECT queue_job_id FROM stockcast_jobs WHERE id = %s", (job_id,))
        return int(row["queue_job_id"]) if row and row["queue_job_id"] is not None else None

    def waiting_for(self, model: str, other_than: str = "") -> str | None:
        """The id of the queued job of a model (other than `other_than`), if one waits."""
        row = self._one(
            "SELECT id FROM stockcast_jobs WHERE model = %s AND status = %s AND id <> %s ORDER BY seq LIMIT 1",
            (model, QUEUED, other_than),
        )
        return str(row["id"]) if row else None

    def list(self, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Newest jobs first, optionally filtered by status."""
        with self.connection() as connection:
            rows = connection.execute(
                f"SELECT {COLUMNS} FROM stockcast_jobs WHERE (%s::text IS NULL OR status = %s) "
                "ORDER BY seq DESC LIMIT %s",
                (status, status, limit),
            ).fetchall()
        return [dict(row) for row in rows]

    def cancel_requested(self, job_id: str) -> bool:
        """Whether someone asked to cancel this job."""
        row = self._one("SELECT cancel_requested FROM stockcast_jobs WHERE id = %s", (job_id,))
        return bool(row and row["cancel_requested"])

    # Writing -----------------------------------------------------------------

    def mark_running(self, job_id: str, attempt: int, worker: str) -> bool:
        """Claim the record for one attempt; False if it was cancelled or finished meanwhile."""
        row = self._one(
            "UPDATE stockcast_jobs SET status = %s, attempts = %s, worker = %s, error = NULL, "
            "started_at = COALESCE(started_at, %s), updated_at = now() "
            "WHERE id = %s AND status IN (%s, %s) AND NOT cancel_requested RETURNING id",
            (RUNNING, attempt, worker, now_iso(), job_id, QUEUED, RUNNING),
        )
        return row is not None

    def set_progress(self, job_id: str, progress: dict[str, Any], attempt: int | None = None) -> None:
        """Record the latest epoch's progress (ignored when it comes from an attempt that was superseded)."""
        self._one(
            "UPDATE stockcast_jobs SET progress = %s, updated_at = now() "
            "WHERE id = %s AND status = %s AND (%s::int IS NULL OR attempts = %s) RETURNING id",
            (Jsonb(progress), job_id, RUNNING, attempt, attempt),
        )

    def touch(self, job_id: str, attempt: int) -> None:
        """Show that the attempt's runner is alive, between progress writes (a long epoch, a draining queue worker)."""
        self._one(
            "UPDATE stockcast_jobs SET updated_at = now() WHERE id = %s AND status = %s AND attempts = %s RETURNING id",
            (job_id, RUNNING, attempt),
        )

    def set_result(self, job_id: str, result: dict[str, Any], attempt: int | None = None) -> None:
        """Record what a training process produced; its queue worker marks the job succeeded."""
        self._one(
            "UPDATE stockcast_jobs SET result = %s, updated_at = now() "
            "WHERE id = %s AND status = %s AND (%s::int IS NULL OR attempts = %s) RETURNING id",
            (Jsonb(result), job_id, RUNNING, attempt, attempt),
        )

    def finish(self, job_id: str, outcome: JobOutcome, attempt: int | None = None) -> bool:
        """Move a queued or running job to a final state; False if it had already finished (or was retried)."""
        row = self._one(
            "UPDATE stockcast_jobs SET status = %s, result = COALESCE(%s, result), error = %s, finished_at = %s, "
            "updated_at = now() WHERE id = %s AND status IN (%s, %s) AND (%s::int IS NULL OR attempts = %s) "
            "RETURNING id",
            (
                outcome.status,
                Jsonb(outcome.result) if outcome.result is not None else None,
                outcome.error,
                now_iso(),
                job_id,
                QUEUED,
                RUNNING,
                attempt,
                attempt,
            ),
        )
        return row is not None

    def requeue(self, job_id: str, attempt: int, reason: str) -> bool:
        """Put a job whose queue worker died back in the queue, saying why it runs again; False if it moved on."""
        row = self._one(
            "UPDATE stockcast_jobs SET status = %s, error = %s, updated_at = now() "
            "WHERE id = %s AND status = %s AND attempts = %s RETURNING id",
            (QUEUED, reason, job_id, RUNNING, attempt),
        )
        return row is not None

    def request_cancel(self, job_id: str) -> None:
        """Flag a job for cancellation; its training process checks the flag every epoch."""
        self._one("UPDATE stockcast_jobs SET cancel_requested = true WHERE id = %s RETURNING id", (job_id,))

    def claim_stalled(self, queue_job_id: int, stalled_seconds: float) -> dict[str, Any] | None:
        """The running record of a procrastinate job if nothing wrote it for `stalled_seconds`, claimed for one sweeper.

        The claim moves `updated_at`: a second sweeper running at the same
        moment finds the record fresh and leaves it alone.
        """
        return self._one(
            f"UPDATE stockcast_jobs SET updated_at = now() WHERE queue_job_id = %s AND status = %s "
            f"AND updated_at < now() - make_interval(secs => %s) RETURNING {COLUMNS}",
            (queue_job_id, RUNNING, stalled_seconds),
        )

    def notify_models(self, model: str) -> None:
        """Tell every API replica listening that a model's versions or aliases changed."""
        with self.connection() as connection:
            connection.execute("SELECT pg_notify(%s, %s)", (MODELS_CHANNEL, model))
