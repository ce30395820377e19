"""The procrastinate queue of scaled-out mode: the task name, the lock, and the calls the API makes.

API processes only defer and cancel, always on their own connection, so
that a job record and its queue entry are written in one transaction. The
task body lives in `app.jobs.queue_task`, imported only by queue workers
(`python -m app.worker`). See docs/design.md, "Scaled-out jobs".
"""

from __future__ import annotations

from typing import Any

import procrastinate
import psycopg

TRAIN_TASK = "stockcast.train"
TRAIN_QUEUE = "default"
# Scoring the forecast ledger after an append: its own queue, so it never waits behind a training job.
SCORE_TASK = "stockcast.score"
SCORE_QUEUE = "stockcast-scoring"


def model_lock(model: str) -> str:
    """The procrastinate lock (and queueing lock) of a model's jobs.

    As `lock`, it runs one job per model at a time, so that the promotion gate
    reads and moves `champion` without a race; as `queueing_lock`, it lets at
    most one job per model wait, so a second one is refused (409) instead of
    piling up behind it.
    """
    return f"stockcast-model:{model}"


def api_queue() -> procrastinate.App:
    """A procrastinate app for deferring and cancelling on connections the caller passes; it opens no pool."""
    return procrastinate.App(connector=procrastinate.SyncPsycopgConnector())


def defer_training(queue: procrastinate.App, connection: psycopg.Connection[Any], job_id: str, model: str) -> int:
    """Queue the training of record `job_id` inside the caller's transaction; raises AlreadyEnqueued."""
    lock = model_lock(model)
    deferrer = queue.configure_task(TRAIN_TASK, lock=lock, queueing_lock=lock, connection=connection)
    return int(deferrer.defer(job_id=job_id))


def defer_scoring(queue: procrastinate.App, connection: psycopg.Connection[Any], dataset: str) -> bool:
    """Queue the scoring of `dataset`'s open forecasts; False when one is already waiting (it will score all)."""
    from procrastinate.exceptions import AlreadyEnqueued

    lock = f"stockcast-score:{dataset}"
    deferrer = queue.configure_task(SCORE_TASK, queue=SCORE_QUEUE, lock=lock, queueing_lock=lock, connection=connection)
    try:
        deferrer.defer(dataset=dataset)
    except AlreadyEnqueued:
        return False
    return True


def cancel_queued(
    queue: procrastinate.App, connection: psycopg.Connection[Any], queue_job_id: int, abort: bool
) -> bool:
    """Cancel a waiting job (abort=False) or ask the queue worker running it to stop (abort=True)."""
    return bool(queue.job_manager.cancel_job_by_id(queue_job_id, abort=abort, connection=connection))
