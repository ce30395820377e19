"""The tick: fire every schedule's due slot as an ordinary training job, at most once per slot.

`tick(scheduler, now)` is one pass: under the store's leadership (scaled
out, a PostgreSQL advisory lock that one queue worker holds at a time), each
enabled schedule with a due slot either submits a job through the job
backend (`submitted_by: "schedule"`) or is skipped with the reason (too few
new rows, the dataset gone, the queue refusing). Missed slots coalesce into
the latest. The job's Idempotency-Key names the schedule's revision and
slot, so even a ticker that dies between submitting and recording queues
one job per slot. The clock is a parameter. See docs/design.md, "Schedules".
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.datasets import DatasetStore
from app.jobs.backend import JobBackend
from app.jobs.store import Submission
from app.schedules.spec import ScheduleSpec
from app.schedules.store import ScheduleStore
from app.schedules.timing import DueSlot, due_slot
from training.errors import StockcastError
from training.store import ModelStore

logger = logging.getLogger("stockcast.schedules")
# Who a scheduled run's job record names as its submitter.
SUBMITTED_BY = "schedule"
SUBMITTED, SKIPPED = "submitted", "skipped"


@dataclass(frozen=True)
class Scheduler:
    """What a tick reads and writes: the schedules, the job backend, the model store and the datasets."""

    schedules: ScheduleStore
    jobs: JobBackend
    models: ModelStore
    datasets: DatasetStore
    max_queued: int


def tick(scheduler: Scheduler, now: dt.datetime) -> list[dict[str, Any]]:
    """Fire the due slot of every enabled schedule; the runs recorded (none when another ticker leads)."""
    with scheduler.schedules.leadership() as leading:
        if not leading:
            return []
        runs = []
        for schedule in scheduler.schedules.all():
            try:
                run = fire(scheduler, schedule, now)
            except Exception:  # one broken schedule must not stop the others
                logger.exception("schedule of model %s: the tick failed", schedule["model"])
                continue
            if run is not None:
                runs.append(run)
        return runs


def fire(scheduler: Scheduler, schedule: dict[str, Any], now: dt.datetime) -> dict[str, Any] | None:
    """Fire one schedule's due slot, if it has one: submit its job or skip it; the run recorded, or None."""
    spec = ScheduleSpec.model_validate(schedule["spec"])
    if not spec.enabled:
        return None
    last_slot = dt.datetime.fromisoformat(schedule["last_slot"]) if schedule["last_slot"] else None
    due = due_slot(spec.when, schedule["calendar"], dt.datetime.fromisoformat(schedule["anchor"]), last_slot, now)
    if due is None:
        return None
    model = str(schedule["model"])
    run: dict[str, Any] = {
        "model": model,
        "slot": due.slot.isoformat(),
        "revision": schedule["revision"],
        "slots": due.slots,
        "at": now.isoformat(),
        "job_id": None,
    }
    rows_now: int | None = None
    try:
        rows_now = int(scheduler.datasets.report(spec.dataset)["rows_kept"])
    except StockcastError as error:
        run.update(outcome=SKIPPED, reason=f"the dataset cannot be read: {error}")
    else:
        since = schedule["last_rows"] if schedule["last_rows"] is not None else rows_trained_on(scheduler, model, spec)
        run["rows"] = rows_now
        too_few = too_few_rows(rows_now, since, spec.min_new_rows, spec.dataset)
        if too_few is not None:
            run.update(outcome=SKIPPED, reason=too_few)
        else:
            run.update(submit(scheduler, model, spec, schedule["revision"], due))
    submitted = run["outcome"] == SUBMITTED
    scheduler.schedules.record_run(run, rows_now if submitted else None)
    coalesced = f" (standing for {due.slots} slots missed meanwhile)" if due.slots > 1 else ""
    logger.info(
        "schedule of model %s, slot %s%s: %s%s",
        model,
        run["slot"],
        coalesced,
        run["outcome"],
        f" job {run['job_id']}" if submitted else f": {run['reason']}",
    )
    return run


def rows_trained_on(scheduler: Scheduler, model: str, spec: ScheduleSpec) -> int | None:
    """The rows of the dataset the model's newest version trained on (the baseline before a schedule's first run)."""
    for metadata in reversed(list(scheduler.models.iter_metadata(model))):
        data = metadata.get("data") or {}
        if data.get("dataset") == spec.dataset and data.get("rows") is not None:
            return int(data["rows"])
    return None


def too_few_rows(rows_now: int, since: int | None, min_new_rows: int, dataset: str) -> str | None:
    """Why a run is skipped for want of new rows, or None when it has enough (pure)."""
    if since is None:
        return None
    new = rows_now - since
    if new >= min_new_rows:
        return None
    return (
        f"too few new rows: dataset '{dataset}' has {rows_now} rows, {new} more than at the last attempt"
        f" ({since}); the schedule needs {min_new_rows}"
    )


def submit(scheduler: Scheduler, model: str, spec: ScheduleSpec, revision: int, due: DueSlot) -> dict[str, Any]:
    """Queue the slot's training job; what the run records (the job, or why it was not queued)."""
    request = {"model": model, "dataset": spec.dataset, **spec.training_settings()}
    key = f"{SUBMITTED_BY}\n{model}\n{revision}\n{due.slot.isoformat()}"
    try:
        job, _created = scheduler.jobs.submit(
            Submission(request, max_queued=scheduler.max_queued, submitted_by=SUBMITTED_BY, idempotency_key=key)
        )
    except StockcastError as error:  # the queue is full, a job of the model already waits
        return {"outcome": SKIPPED, "reason": f"not queued: {error}"}
    return {"outcome": SUBMITTED, "reason": None, "job_id": job["id"]}


async def tick_forever(scheduler: Scheduler, every_seconds: float, clock: Callable[[], dt.datetime]) -> None:
    """Tick every `every_seconds`, off the event loop, until cancelled; a failed tick is logged and retried."""
    while True:
        try:
            await asyncio.to_thread(tick, scheduler, clock())
        except Exception:  # the database restarting, a full disk: the next tick tries again
            logger.exception("the schedules' tick failed; trying again in %.0f s", every_seconds)
        await asyncio.sleep(every_seconds)
