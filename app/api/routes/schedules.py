"""A model's retraining schedule: set, read, remove.

Plain `def` routes: schedules are SQLite or PostgreSQL rows, read in
FastAPI's thread pool. The logic is `app.schedules.service`; the runs are
fired by the tick (`app.schedules.ticker`). See docs/design.md, "Schedules".
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body

from app.api.deps import CallerDep, ClockDep, DatasetsDep, JobsDep, ModelNameDep, SchedulesDep, StoreDep
from app.api.examples import SCHEDULE_EXAMPLES
from app.api.responses import SchedulePublic, error_responses
from app.jobs.backend import JobBackend
from app.schedules.service import describe, set_schedule
from app.schedules.spec import ScheduleSpec
from app.schedules.store import ScheduleStore

router = APIRouter(prefix="/models", tags=["schedules"])


def _answer(
    schedules: ScheduleStore, schedule: dict[str, Any], clock: Callable[[], dt.datetime], jobs: JobBackend
) -> SchedulePublic:
    model = str(schedule["model"])
    return SchedulePublic.model_validate(describe(schedule, schedules.runs(model), clock(), jobs.get))


@router.put("/{name}/schedule", response_model=SchedulePublic, responses=error_responses(404, 422, 503))
def update_schedule(
    name: ModelNameDep,
    spec: Annotated[ScheduleSpec, Body(openapi_examples=SCHEDULE_EXAMPLES)],
    schedules: SchedulesDep,
    store: StoreDep,
    datasets: DatasetsDep,
    jobs: JobsDep,
    clock: ClockDep,
    caller: CallerDep,
) -> SchedulePublic:
    """Retrain the model on a schedule of its exchange calendar (e.g. 45 minutes after every close).

    Each due slot queues an ordinary training job (`submitted_by: "schedule"`)
    through the promotion gate, or is skipped with the reason when the dataset
    has too few new rows. Setting it again starts a new revision, counted from now.
    """
    schedule = set_schedule(schedules, store, datasets, name, spec, caller, clock())
    return _answer(schedules, schedule, clock, jobs)


@router.get("/{name}/schedule", response_model=SchedulePublic, responses=error_responses(404, 422, 503))
def read_schedule(name: ModelNameDep, schedules: SchedulesDep, jobs: JobsDep, clock: ClockDep) -> SchedulePublic:
    """The schedule, its next run, its latest runs, the last job and the gate's decision on it."""
    return _answer(schedules, schedules.require(name), clock, jobs)


@router.delete("/{name}/schedule", response_model=SchedulePublic, responses=error_responses(404, 422, 503))
def delete_schedule(name: ModelNameDep, schedules: SchedulesDep, jobs: JobsDep, clock: ClockDep) -> SchedulePublic:
    """Remove the schedule and its history of runs (jobs it queued stay); answers what it was."""
    schedule = schedules.require(name)
    answer = _answer(schedules, schedule, clock, jobs)
    schedules.delete(name)
    return answer
