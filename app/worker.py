"""The queue worker, `python -m app.worker` (or `stockcast-worker`): runs training jobs queued in PostgreSQL.

Start one on every machine that reaches the database (STOCKCAST_DATABASE_URL)
and mounts the shared model store and data folder. Each runs at most
STOCKCAST_WORKER_CONCURRENCY jobs at once, each in a fresh training process
(`app.jobs.queue_task`), sweeps up the jobs of queue workers that died, and
ticks the retraining schedules while it holds their advisory lock.
SIGTERM or Ctrl-C lets running jobs finish; when the database goes away, the
queue worker starts again once it is back. See docs/design.md, "Scaled-out jobs".
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import sys
from typing import Any

from app.core.config import Settings, get_settings
from app.core.stores import model_store

logger = logging.getLogger("stockcast.worker")
# Longest wait before the queue worker tries the database again after losing it.
MAX_RECONNECT_SECONDS = 10.0


async def _sweep_forever(queue: object, settings: Settings) -> None:
    from app.jobs.outages import Reachability
    from app.jobs.queue_task import records_for, sweep

    reachability = Reachability()
    while True:
        try:
            await asyncio.to_thread(records_for(settings).ping)
            reachability.answered()
            # After an outage every heartbeat is stale: trust them again once live workers have beaten since.
            if reachability.for_at_least(settings.worker_stalled_seconds):
                await sweep(queue, settings)  # type: ignore[arg-type]
        except asyncio.CancelledError:
            raise
        except Exception:  # the next sweep tries again (database restarting, ...)
            reachability.failed()
            logger.exception("sweeping stalled jobs failed")
        await asyncio.sleep(settings.sweep_seconds)


async def _tick_schedules(settings: Settings) -> None:
    """Fire due schedules while this queue worker holds the tickers' advisory lock (one worker acts per tick)."""
    from app.datasets.remote import open_datasets
    from app.jobs.backend import PostgresJobs
    from app.schedules.service import utc_now
    from app.schedules.store import PostgresSchedules
    from app.schedules.ticker import Scheduler, tick_forever

    assert settings.database_url is not None  # main() refuses to start without one

    async def models_changed(_name: str) -> None:
        return None

    # Two connections for the schedules (the lock's and the reads'), one for submitting: a tick is one at a time.
    schedules = PostgresSchedules(settings.database_url, pool_size=2)
    jobs = PostgresJobs(settings.model_copy(update={"database_pool_size": 1}), models_changed)
    scheduler = Scheduler(schedules, jobs, model_store(settings), open_datasets(settings), settings.max_queued_jobs)
    try:
        await tick_forever(scheduler, settings.schedule_tick_seconds, utc_now)
    finally:
        await asyncio.to_thread(schedules.close)
        await jobs.stop()


def score_ledger(dataset: str) -> None:
    """procrastinate task: score the ledger's open forecasts of `dataset`, judge each champion, tell the replicas.

    Each replica, told that a model changed, adapts its bands to the new scores and serves what a demotion left.
    """
    from app.datasets.remote import open_datasets
    from app.jobs.queue_task import records_for
    from app.online import demote_if_due, promote_if_due, score_stored
    from app.schedules.service import utc_now
    from app.shadow import shadow_dataset

    settings = get_settings()
    store = _ledger_store(settings.database_url or "", settings.database_pool_size)
    datasets = open_datasets(settings)
    models = model_store(settings)
    scored = score_stored(store, datasets, dataset)
    # The challenger forecasts the champion's logged windows in a child process, then they are scored.
    shadowed = shadow_dataset(store, models, datasets, dataset)
    logger.info("ledger: %d forecasts of dataset %s scored, %d challenger forecasts", scored, dataset, shadowed)
    if scored or shadowed:
        for model in store.models_of(dataset):
            # A demoted champion reaches every replica with the same notice as the new scores.
            demote_if_due(store, models, model, settings)
            promote_if_due(store, models, model, settings, utc_now())
            records_for(settings).notify_models(model)


@functools.lru_cache
def _ledger_store(database_url: str, pool_size: int) -> Any:
    """One ledger pool per queue worker process."""
    from app.ledger.postgres import PostgresLedger

    return PostgresLedger(database_url, pool_size)


def sweep_store(settings: Settings) -> None:
    """With object storage: delete the uploads of writers that died before their manifest (older than an hour,
    so no running writer's). A folder store is left alone: its temporaries may be another worker's, mid-write."""
    from training.errors import StockcastError

    store = model_store(settings)
    if store.remote:
        with contextlib.suppress(StockcastError):
            store.remove_stale_temporaries()


async def run_worker(settings: Settings, stopping: asyncio.Event) -> None:
    """One run of the queue worker and its sweeper, until asked to stop or the database connection is lost."""
    from procrastinate.worker import Worker

    from app.jobs.backend import worker_name
    from app.jobs.queue import SCORE_QUEUE, SCORE_TASK, TRAIN_QUEUE
    from app.jobs.queue_task import build_worker_queue

    queue = build_worker_queue(settings)
    queue.task(name=SCORE_TASK, queue=SCORE_QUEUE)(score_ledger)
    async with queue.open_async():
        # Scoring has a worker of its own: it must not wait for a training slot, nor take one.
        scorer = Worker(
            queue,
            queues=[SCORE_QUEUE],
            name=f"{worker_name()}-scoring",
            concurrency=1,
            fetch_job_polling_interval=settings.abort_poll_seconds * 5,
            update_heartbeat_interval=settings.worker_heartbeat_seconds,
            stalled_worker_timeout=settings.worker_stalled_seconds,
            listen_notify=True,
            install_signal_handlers=False,
        )
        worker = Worker(
            queue,
            queues=[TRAIN_QUEUE],
            name=worker_name(),
            concurrency=settings.worker_concurrency,
            abort_job_polling_interval=settings.abort_poll_seconds,
            fetch_job_polling_interval=settings.abort_poll_seconds * 5,
            update_heartbeat_interval=settings.worker_heartbeat_seconds,
            stalled_worker_timeout=settings.worker_stalled_seconds,
            listen_notify=True,
            # Our handlers below: they also tell the restart loop that the stop was asked for.
            install_signal_handlers=False,
        )
        loop = asyncio.get_running_loop()

        def stop() -> None:
            stopping.set()
            worker.stop()
            scorer.stop()

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop)
        sweeper = asyncio.create_task(_sweep_forever(queue, settings), name="sweeper")
        schedules = asyncio.create_task(_tick_schedules(settings), name="schedules")
        scoring = asyncio.create_task(scorer.run(), name="scorer")
        try:
            await worker.run()
        finally:
            scorer.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(scoring, timeout=settings.graceful_shutdown_seconds)
            sweeper.cancel()
            schedules.cancel()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)


def main() -> int:
    """Check the schema, then run jobs until SIGTERM/SIGINT, starting again after a lost database."""
    from app.jobs.schema import SchemaMissingError, require_schema

    settings = get_settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    if not settings.database_url:
        print("stockcast-worker: set STOCKCAST_DATABASE_URL to the PostgreSQL database of the API", file=sys.stderr)
        return 2
    try:
        require_schema(settings.database_url)
    except SchemaMissingError as error:
        print(f"stockcast-worker: {error}", file=sys.stderr)
        return 2
    sweep_store(settings)

    async def supervise() -> None:
        stopping = asyncio.Event()
        delay = 1.0
        while not stopping.is_set():
            try:
                await run_worker(settings, stopping)
                if stopping.is_set():
                    return
                # procrastinate stopped the queue worker itself: its listener lost the database.
                logger.warning(
                    "queue worker stopped without being asked (database lost?); starting again in %.0f s", delay
                )
            except Exception as error:  # database restarting: try again with back-off
                logger.warning("queue worker lost the database (%s); starting again in %.0f s", error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RECONNECT_SECONDS)

    asyncio.run(supervise())
    return 0


if __name__ == "__main__":
    sys.exit(main())
