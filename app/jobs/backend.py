"""Where job records live and who runs the jobs: one interface, two modes.

- `EmbeddedJobs` (no STOCKCAST_DATABASE_URL): records in SQLite, jobs run by
  this API process's own runner (`app.jobs.local_runner`); the quick start.
- `PostgresJobs` (STOCKCAST_DATABASE_URL set): records in PostgreSQL, jobs
  queued with procrastinate and run by queue workers (`python -m app.worker`)
  on any machine; this API process only enqueues, reads and cancels.

Routes talk to `JobBackend` only, so both modes give the same answers.
See docs/design.md, "Training jobs" and "Scaled-out jobs".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol

from app.core.config import Settings
from app.jobs.local_runner import FinishedCallback, JobRunner
from app.jobs.store import CANCELLED, FINISHED, QUEUED, JobOutcome, JobStore, Submission
from training.errors import StockcastError

logger = logging.getLogger("stockcast.jobs")
# Called with a model name when another process changed its versions or aliases.
ModelsChangedCallback = Callable[[str], Awaitable[None]]


class JobFinishedError(StockcastError):
    """The job already ended and cannot be cancelled."""

    status_code = 409


class JobWaitingError(StockcastError):
    """Another job of the same model is waiting; one job per model may wait at a time."""

    status_code = 409


class JobBackend(Protocol):
    """What the routes and the app's lifespan need from a job mode."""

    async def start(self) -> None:
        """Settle what a previous run left and begin (raises when the mode cannot work)."""

    async def stop(self) -> None:
        """Stop what `start` began."""

    def submit(self, submission: Submission) -> tuple[dict[str, Any], bool]:
        """Record and queue a job: its record and True, or the job an earlier call with its key made and False.

        More than `submission.max_queued` waiting jobs raise QueueFullError;
        the check and the insert are one step, whatever the concurrency.
        """

    def get(self, job_id: str) -> dict[str, Any] | None:
        """One job's record, or None."""

    def list(self, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Records, newest first."""

    def cancel(self, job_id: str, job: dict[str, Any], by: str | None = None) -> dict[str, Any]:
        """Cancel a queued job or ask a running one to stop; returns the record after the request.

        `by` (the API key's name) is written in the error of a job cancelled before it started.
        """

    def problem(self) -> str | None:
        """Why jobs cannot be queued or read right now, or None when they can (for /ready)."""

    def announce(self, model: str) -> None:
        """Tell the other API replicas that a model's versions or aliases changed."""

    def shared_lock(self, name: str) -> AbstractContextManager[object]:
        """A lock named `name` that every API replica takes alike, held until the block ends (for dataset changes)."""

    def defer_scoring(self, dataset: str) -> bool:
        """Queue the ledger's scoring of `dataset` for a queue worker; False when the API is to score it itself."""


def cancelled_before_start(by: str | None) -> str:
    """The error of a job cancelled while it waited, naming the key that cancelled it."""
    return f"cancelled by request of key '{by}' before it started" if by else "cancelled by request before it started"


def _with_attempts(job: dict[str, Any] | None) -> dict[str, Any] | None:
    """Embedded records have one attempt once started: the runner never retries."""
    if job is not None:
        job.setdefault("attempts", 0 if job.get("started_at") is None else 1)
        job.setdefault("worker", None)
    return job


class EmbeddedJobs:
    """SQLite records, jobs run by this process's `JobRunner` (one machine)."""

    def __init__(self, settings: Settings, on_finished: FinishedCallback) -> None:
        self.store = JobStore(settings.jobs_db)
        self.runner = JobRunner(settings, self.store, on_finished)

    async def start(self) -> None:
        """Settle jobs a previous API process left running, then start the runner."""
        settled = self.runner.recover()
        if settled:
            logger.warning("settled %d job(s) interrupted by the previous shutdown: %s", len(settled), settled)
        self.runner.start()

    async def stop(self) -> None:
        """Stop the runner; running jobs end as failed with the reason."""
        await self.runner.stop()

    def submit(self, submission: Submission) -> tuple[dict[str, Any], bool]:
        """Insert a queued record and wake the runner."""
        job, created = self.store.create(
            submission.request,
            submission.submitted_by,
            max_queued=submission.max_queued,
            idempotency_key=submission.idempotency_key,
        )
        if created:
            self.runner.wake()
        return _with_attempts(job) or job, created

    def get(self, job_id: str) -> dict[str, Any] | None:
        """One record."""
        return _with_attempts(self.store.get(job_id))

    def list(self, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Records, newest first."""
        return [job for job in map(_with_attempts, self.store.list(status=status, limit=limit)) if job is not None]

    def cancel(self, job_id: str, job: dict[str, Any], by: str | None = None) -> dict[str, Any]:
        """Flag the job; a queued one ends now, a running one when the runner kills its training process."""
        if job["status"] in FINISHED:
            raise JobFinishedError(f"job {job_id} already {job['status']}")
        self.store.request_cancel(job_id)
        if job["status"] == QUEUED:
            self.store.finish(job_id, JobOutcome(CANCELLED, error=cancelled_before_start(by)))
        self.runner.wake()
        return self.get(job_id) or job

    def problem(self) -> str | None:
        """SQLite on the local disk is always there."""
        return None

    def announce(self, model: str) -> None:
        """One API process: nobody else to tell."""

    def shared_lock(self, name: str) -> AbstractContextManager[object]:
        """One API process on one machine: the callers' own file locks are enough."""
        return contextlib.nullcontext()

    def defer_scoring(self, dataset: str) -> bool:
        """Embedded: the API scores the ledger itself, at once (False: nothing was queued)."""
        return False


class PostgresJobs:
    """PostgreSQL records and a procrastinate queue; queue workers (`python -m app.worker`) run the jobs."""

    def __init__(self, settings: Settings, on_models_changed: ModelsChangedCallback) -> None:
        from app.jobs.postgres import PostgresJobStore
        from app.jobs.queue import api_queue

        assert settings.database_url is not None  # chosen by open_job_backend
        self.settings = settings
        self.database_url = settings.database_url
        # Fail fast and recover fast: a job route answers 503 within a second of an outage, and
        # reconnects within seconds of the database's return.
        self.store = PostgresJobStore(
            self.database_url, settings.database_pool_size, wait_seconds=1.0, reconnect_seconds=2.0
        )
        self.queue = api_queue()
        self.on_models_changed = on_models_changed
        self._listener: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Refuse to start on a database without the schema; then listen for new versions."""
        from app.jobs.schema import require_schema

        await asyncio.to_thread(require_schema, self.database_url)
        self._listener = asyncio.create_task(self._listen(), name="models-listener")

    async def stop(self) -> None:
        """Stop listening and close the pool."""
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        await asyncio.to_thread(self.store.close)

    async def _listen(self) -> None:
        """Refresh a model as soon as a queue worker announces it; the registry's polling covers missed notices."""
        import psycopg

        from app.jobs.postgres import MODELS_CHANNEL

        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.database_url, autocommit=True) as connection:
                    await connection.execute(f"LISTEN {MODELS_CHANNEL}")
                    async for notice in connection.notifies():
                        try:
                            await self.on_models_changed(notice.payload)
                        except Exception:  # one bad refresh must not end the listener
                            logger.exception("refreshing model %s after a notice failed", notice.payload)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the database restarted: listen again, poll meanwhile
                logger.warning("model notices interrupted (%s); listening again shortly", error)
                await asyncio.sleep(min(self.settings.refresh_seconds, 5.0))

    def defer_scoring(self, dataset: str) -> bool:
        """Queue the scoring of the ledger after an append, for a queue worker (the append answers at once)."""
        from app.jobs.queue import defer_scoring

        with self._connection() as connection:
            defer_scoring(self.queue, connection, dataset)
        return True

    def submit(self, submission: Submission) -> tuple[dict[str, Any], bool]:
        """Insert the record and its queue entry in one transaction, so a crash keeps both or neither."""
        from procrastinate.exceptions import AlreadyEnqueued

        from app.jobs.queue import defer_training

        request, key = submission.request, submission.idempotency_key
        model = str(request["model"])
        try:
            with self._connection() as connection, connection.transaction():
                earlier = self.store.admit(connection, request, submission.max_queued, key)
                if earlier is not None:
                    return earlier, False
                job_id = self.store.insert(connection, request, submission.submitted_by, key)
                self.store.link(connection, job_id, defer_training(self.queue, connection, job_id, model))
        except AlreadyEnqueued:
            waiting = self.store.waiting_for(model)
            raise JobWaitingError(
                f"model '{model}' already has a job waiting to start ({waiting}); one job per model may wait: "
                "submit again once it runs, or cancel it"
            ) from None
        job = self.store.get(job_id)
        assert job is not None  # committed above
        return job, True

    def get(self, job_id: str) -> dict[str, Any] | None:
        """One record."""
        with self._unavailable_as_503():
            return self.store.get(job_id)

    def list(self, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Records, newest first."""
        with self._unavailable_as_503():
            return self.store.list(status=status, limit=limit)

    def cancel(self, job_id: str, job: dict[str, Any], by: str | None = None) -> dict[str, Any]:
        """Cancel a waiting job now; ask the queue worker of a running one to stop it (it polls for aborts)."""
        from app.jobs.queue import cancel_queued

        if job["status"] in FINISHED:
            raise JobFinishedError(f"job {job_id} already {job['status']}")
        queue_job_id = self.store.queue_job_id(job_id)
        self.store.request_cancel(job_id)
        if queue_job_id is not None:
            with self._connection() as connection:
                if not cancel_queued(self.queue, connection, queue_job_id, abort=False):
                    # It started meanwhile (or runs): its queue worker aborts it.
                    cancel_queued(self.queue, connection, queue_job_id, abort=True)
                elif job["status"] == QUEUED or self._is_queued(job_id):
                    self.store.finish(job_id, JobOutcome(CANCELLED, error=cancelled_before_start(by)))
        return self.store.get(job_id) or job

    def announce(self, model: str) -> None:
        """NOTIFY every replica listening; a lost notice is covered by their polling of the store."""
        try:
            self.store.notify_models(model)
        except Exception as error:  # the alias moved all the same; other replicas see it at their next poll
            logger.warning("could not announce %s to the other replicas: %s", model, error)

    def shared_lock(self, name: str) -> AbstractContextManager[object]:
        """A PostgreSQL advisory lock: replicas on other machines may share the data folder, not its file locks."""
        return self.store.advisory_lock(name)

    def _is_queued(self, job_id: str) -> bool:
        job = self.store.get(job_id)
        return job is not None and job["status"] == QUEUED

    def problem(self) -> str | None:
        """None while the database answers; otherwise why not."""
        try:
            self.store.ping()
        except Exception as error:
            return f"the job database is unreachable: {type(error).__name__}: {error}"
        return None

    @contextlib.contextmanager
    def _unavailable_as_503(self) -> Any:
        try:
            yield
        except StockcastError:
            raise
        except Exception as error:
            import psycopg
            import psycopg_pool

            from app.jobs.postgres import DatabaseUnavailableError

            if isinstance(error, psycopg.OperationalError | psycopg_pool.PoolTimeout):
                raise DatabaseUnavailableError(f"the job database is unreachable: {error}") from error
            raise

    @contextlib.contextmanager
    def _connection(self) -> Any:
        with self._unavailable_as_503(), self.store.connection() as connection:
            yield connection


def open_job_backend(
    settings: Settings, on_finished: FinishedCallback, on_models_changed: ModelsChangedCallback
) -> JobBackend:
    """The embedded backend unless STOCKCAST_DATABASE_URL names a PostgreSQL database."""
    if settings.database_url:
        return PostgresJobs(settings, on_models_changed)
    return EmbeddedJobs(settings, on_finished)


def worker_name() -> str:
    """How a queue worker names itself in job records: host and pid."""
    import os

    return f"{socket.gethostname()}:{os.getpid()}"
