"""Submitting jobs under concurrency: the queue bound holds and an Idempotency-Key queues one job, in both modes.

The embedded backend is not started (its runner would take the jobs off the
queue); the scaled-out one runs against the real PostgreSQL with no queue
worker, so every submitted job stays queued.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.jobs.backend import EmbeddedJobs, JobBackend, PostgresJobs
from app.jobs.store import IdempotencyKeyReusedError, QueueFullError, Submission
from tests.helpers import make_settings, scratch_database

REQUEST = {"model": "tiny", "dataset": "msft", "epochs": 1}
CALLERS = 24
BOUND = 3


async def _ignore(*_: Any) -> None:
    return None


@pytest.fixture(params=["embedded", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobBackend]:
    """A job backend whose jobs stay queued."""
    if request.param == "embedded":
        yield EmbeddedJobs(make_settings(tmp_path / "models", tmp_path / "var"), _ignore)
        return
    with scratch_database() as url:
        jobs = PostgresJobs(make_settings(tmp_path / "models", tmp_path / "var", database_url=url), _ignore)
        try:
            yield jobs
        finally:
            jobs.store.close()


def at_once(count: int, call: Callable[[int], Any]) -> list[Any]:
    """`call(index)` from `count` threads released together; each result or the exception it raised."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = call(index)
        except Exception as error:
            results[index] = error

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def test_concurrent_submissions_never_overfill_the_queue(backend: JobBackend) -> None:
    # Finding 10: 24 concurrent POST /train with a bound of 3 left 7 queued.
    results = at_once(
        CALLERS, lambda index: backend.submit(Submission({**REQUEST, "model": f"m{index}"}, max_queued=BOUND))
    )
    accepted = [result for result in results if isinstance(result, tuple)]
    refused = [result for result in results if isinstance(result, QueueFullError)]
    assert (len(accepted), len(refused)) == (BOUND, CALLERS - BOUND), results
    assert len(backend.list(status="queued")) == BOUND
    assert str(refused[0]) == (
        "3 training jobs are waiting to start, the most the queue holds (STOCKCAST_MAX_QUEUED_JOBS);"
        " retry once one has started"
    )


def test_concurrent_retries_with_one_key_queue_one_job(backend: JobBackend) -> None:
    # Finding 15: a client whose answer was lost could not retry POST /train safely.
    results = at_once(8, lambda _: backend.submit(Submission(REQUEST, 20, "desk", "desk\nretry-1")))
    assert all(isinstance(result, tuple) for result in results), results
    assert len({job["id"] for job, _ in results}) == 1
    assert sorted(created for _, created in results) == [False] * 7 + [True]
    assert len(backend.list()) == 1


def test_a_key_sent_again_with_another_request_is_refused(backend: JobBackend) -> None:
    backend.submit(Submission(REQUEST, 20, "desk", "desk\nk"))
    with pytest.raises(IdempotencyKeyReusedError) as refused:
        backend.submit(Submission({**REQUEST, "epochs": 2}, 20, "desk", "desk\nk"))
    assert refused.value.status_code == 422
    assert str(refused.value) == (
        "Idempotency-Key: this key came with a different training request before (model 'tiny', dataset 'msft');"
        " send a new key for a new request"
    )
    assert len(backend.list()) == 1


def test_a_retry_is_answered_even_when_the_queue_is_full(backend: JobBackend) -> None:
    first, created = backend.submit(Submission(REQUEST, 1, "desk", "desk\nfull"))
    assert created
    again, created = backend.submit(Submission(REQUEST, 1, "desk", "desk\nfull"))
    assert (again["id"], created) == (first["id"], False)
    with pytest.raises(QueueFullError):
        backend.submit(Submission({**REQUEST, "model": "other"}, 1, "desk"))
