"""A job run's view of its records through a database outage: training goes on, results wait for the database.

A running training must not die because PostgreSQL restarted. Progress
writes and cancellation checks are best-effort (skipped for a while after a
failure, so an outage costs no waiting per epoch); the writes that settle
the job (its result, its final status) are retried until the database is
back, for up to `give_up_seconds`. Only connection failures count as an
outage: any other error is a bug or a refusal and propagates at once.
See docs/design.md, "Scaled-out jobs".
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

logger = logging.getLogger("stockcast.jobs")
T = TypeVar("T")


def is_outage(error: BaseException) -> bool:
    """Whether `error` means the job database cannot be reached (as opposed to a refused or wrong statement)."""
    try:
        import psycopg
        import psycopg_pool
    except ImportError:  # pragma: no cover - installed with the service
        return False
    return isinstance(error, psycopg.OperationalError | psycopg_pool.PoolTimeout)


class OutageTolerantRecords:
    """Wraps a job store (SQLite or PostgreSQL) for a training run; see the module docstring."""

    def __init__(
        self,
        records: Any,
        give_up_seconds: float,
        retry_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.records = records
        # Settling writes give up after this long; skipped writes are tried again after retry_seconds.
        self.give_up_seconds, self.retry_seconds = give_up_seconds, retry_seconds
        self._clock, self._sleep = clock, sleep
        # Until when best-effort writes are skipped (the database was just found unreachable).
        self._down_until = float("-inf")

    # Best-effort: lost during an outage, and the run goes on.

    def set_progress(self, job_id: str, progress: dict[str, Any], attempt: int | None = None) -> None:
        """Record progress, unless the database is down (the next epoch's progress replaces it anyway)."""
        self._best_effort(lambda: self.records.set_progress(job_id, progress, attempt=attempt), None)

    def cancel_requested(self, job_id: str) -> bool:
        """Whether someone asked to cancel; False while the database cannot say (the run goes on)."""
        return bool(self._best_effort(lambda: self.records.cancel_requested(job_id), False))

    def touch(self, job_id: str, attempt: int) -> None:
        """Show the attempt is alive, unless the database is down."""
        self._best_effort(lambda: self.records.touch(job_id, attempt), None)

    def notify_models(self, model: str) -> None:
        """Announce a changed model; replicas' polling covers a notice lost to an outage."""
        self._best_effort(lambda: self.records.notify_models(model), None)

    # Settling: waits for the database.

    def get(self, job_id: str) -> dict[str, Any] | None:
        """One job's record, once the database answers."""
        return self._until_back(lambda: self.records.get(job_id))

    def mark_running(self, job_id: str, attempt: int, worker: str) -> bool:
        """Claim the record for an attempt, once the database answers."""
        return bool(self._until_back(lambda: self.records.mark_running(job_id, attempt, worker)))

    def set_result(self, job_id: str, result: dict[str, Any], attempt: int | None = None) -> None:
        """Record what the run produced, once the database answers."""
        self._until_back(lambda: self.records.set_result(job_id, result, attempt=attempt))

    def finish(self, job_id: str, outcome: Any, attempt: int | None = None) -> bool:
        """Move the job to its final state, once the database answers."""
        return bool(self._until_back(lambda: self.records.finish(job_id, outcome, attempt=attempt)))

    def _best_effort(self, call: Callable[[], T], fallback: T) -> T:
        if self._clock() < self._down_until:
            return fallback
        try:
            return call()
        except Exception as error:
            if not is_outage(error):
                raise
            if self._down_until == float("-inf"):
                logger.warning("job database unreachable (%s); training goes on, progress is not recorded", error)
            self._down_until = self._clock() + self.retry_seconds
            return fallback

    def _until_back(self, call: Callable[[], T]) -> T:
        started = self._clock()
        while True:
            try:
                result = call()
            except Exception as error:
                if not is_outage(error) or self._clock() - started >= self.give_up_seconds:
                    raise
                logger.warning("job database unreachable (%s); trying again in %g s", error, self.retry_seconds)
                self._sleep(self.retry_seconds)
                continue
            if self._down_until != float("-inf"):
                logger.info("job database reachable again")
                self._down_until = float("-inf")
            return result


class Reachability:
    """How long the job database has answered without a break, as one process sees it.

    The sweeper uses it: during an outage every heartbeat goes stale at once,
    so a stale heartbeat means a dead worker only once the database has
    answered for a whole stalled period (every live worker has beaten since).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._since: float | None = None

    def answered(self) -> None:
        """The database answered just now."""
        if self._since is None:
            self._since = self._clock()

    def failed(self) -> None:
        """The database did not answer: the unbroken stretch starts again at the next answer."""
        self._since = None

    def for_at_least(self, seconds: float) -> bool:
        """Whether the database has answered for at least `seconds` without a break."""
        return self._since is not None and self._clock() - self._since >= seconds


__all__ = ["OutageTolerantRecords", "Reachability", "is_outage"]
