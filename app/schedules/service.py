"""Setting, reading and removing a model's schedule: what the routes and `python -m app schedule` call.

Setting checks what a run would need (the dataset exists, the training
settings make a valid TrainConfig) and fixes the calendar the slots follow:
the schedule's own `calendar` setting, else the model's newest version's.
Reading adds what the clock and the job records say: the next run, the
last job and its gate decision. See docs/design.md, "Schedules".
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from app.datasets import DatasetStore
from app.schedules.spec import ScheduleSpec
from app.schedules.store import ScheduleStore
from app.schedules.timing import next_slot
from training.calendars import DEFAULT_CALENDAR, calendar_of
from training.store import ModelStore

# Reads a job record by id (JobBackend.get), or None.
JobReader = Callable[[str], dict[str, Any] | None]


def utc_now() -> dt.datetime:
    """The clock schedules read; tests pass their own instead."""
    return dt.datetime.now(dt.UTC)


def model_calendar(models: ModelStore, model: str, spec: ScheduleSpec) -> str:
    """The calendar a model's runs follow: the schedule's training setting, else its newest version's."""
    if spec.training_settings().get("calendar"):
        return str(spec.training_settings()["calendar"])
    for version in reversed(models.versions(model)):
        return calendar_of(models.read_metadata(model, version))
    return DEFAULT_CALENDAR


def set_schedule(
    schedules: ScheduleStore,
    models: ModelStore,
    datasets: DatasetStore,
    model: str,
    spec: ScheduleSpec,
    by: str | None,
    now: dt.datetime,
) -> dict[str, Any]:
    """Store a model's schedule, its slots counted from `now`; 404 for an unknown dataset, 422 for bad settings."""
    datasets.csv_path(spec.dataset)
    spec.check()
    stored = spec.model_dump(mode="json", exclude_none=True)
    return schedules.put(model, stored, model_calendar(models, model, spec), by, now.isoformat())


def describe(
    schedule: dict[str, Any], runs: list[dict[str, Any]], now: dt.datetime, read_job: JobReader
) -> dict[str, Any]:
    """A schedule as GET answers it: its spec, the next run, the recent runs, the last job and its gate decision."""
    spec = ScheduleSpec.model_validate(schedule["spec"])
    last_slot = _moment(schedule["last_slot"])
    upcoming = None
    if spec.enabled:
        anchor = dt.datetime.fromisoformat(schedule["anchor"])
        upcoming = next_slot(spec.when, schedule["calendar"], anchor, last_slot, now)
    job = read_job(schedule["last_job_id"]) if schedule["last_job_id"] else None
    result = (job or {}).get("result") or {}
    return {
        "model": schedule["model"],
        **spec.model_dump(mode="json", exclude_none=True),
        "calendar": schedule["calendar"],
        "revision": schedule["revision"],
        "anchor": schedule["anchor"],
        "created_at": schedule["created_at"],
        "updated_at": schedule["updated_at"],
        "updated_by": schedule["updated_by"],
        "next_run": upcoming.isoformat() if upcoming is not None else None,
        "last_slot": schedule["last_slot"],
        "last_rows": schedule["last_rows"],
        "runs": runs,
        "last_job": _job_summary(job),
        "last_gate": result.get("gate"),
    }


def _job_summary(job: dict[str, Any] | None) -> dict[str, Any] | None:
    if job is None:
        return None
    keys = ("id", "status", "created_at", "started_at", "finished_at", "error")
    result = job.get("result") or {}
    return {
        **{key: job.get(key) for key in keys},
        "version": result.get("version"),
        "promoted": result.get("promoted"),
    }


def _moment(text: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(text) if text else None
