"""Training jobs: start, watch, list, cancel.

The reads are plain `def` routes, run in FastAPI's thread pool; the others
send their SQLite and file calls there with `asyncio.to_thread`, because
they also wake the runner, which lives on the event loop.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, status

from app.api.deps import DatasetsDep, JobDep, JobsDep, RunnerDep
from app.api.examples import TRAIN_EXAMPLES
from app.api.responses import error_responses
from app.api.schemas import JobAccepted, JobPublic, JobsPublic, TrainRequest
from app.jobs.store import FINISHED
from training.errors import StockcastError

router = APIRouter(tags=["training"])


class JobFinishedError(StockcastError):
    """The job already ended and cannot be cancelled."""

    status_code = 409


@router.post(
    "/train", status_code=status.HTTP_202_ACCEPTED, response_model=JobAccepted, responses=error_responses(404, 422)
)
async def create_training_job(
    request: Annotated[TrainRequest, Body(openapi_examples=TRAIN_EXAMPLES)],
    jobs: JobsDep,
    runner: RunnerDep,
    datasets: DatasetsDep,
) -> JobAccepted:
    """Queue a training job; it runs in a separate worker process. Poll GET /jobs/{job_id}."""
    from training.pipeline import TrainConfig

    await asyncio.to_thread(datasets.csv_path, request.dataset)  # 404 now rather than a failed job later
    settings = request.model_dump(exclude_none=True, exclude={"model", "dataset"})
    for key in ("features",):
        if key in settings:
            settings[key] = tuple(settings[key])
    TrainConfig(**settings)  # 422 now for inconsistent settings (label not among features, ...)
    job = await asyncio.to_thread(jobs.create, request.model_dump(exclude_none=True))
    runner.wake()
    return JobAccepted(job_id=job["id"], status=job["status"], location=f"/jobs/{job['id']}")


@router.get("/jobs", response_model=JobsPublic, responses=error_responses(422))
def read_jobs(
    jobs: JobsDep,
    status_filter: str | None = Query(
        None, alias="status", description="queued, running, succeeded, failed, cancelled"
    ),
    limit: int = Query(100, ge=1, le=1000),
) -> JobsPublic:
    """Jobs, newest first."""
    return JobsPublic(jobs=[JobPublic.model_validate(job) for job in jobs.list(status=status_filter, limit=limit)])


@router.get("/jobs/{job_id}", response_model=JobPublic, responses=error_responses(404))
def read_job(job: JobDep) -> dict[str, Any]:
    """Status, progress (epoch of epochs, losses), error, and the produced version with its metrics."""
    return job


@router.delete("/jobs/{job_id}", response_model=JobPublic, responses=error_responses(404, 409))
async def cancel_job(job: JobDep, jobs: JobsDep, runner: RunnerDep) -> dict[str, Any]:
    """Cancel a queued or running job; no partial version is ever saved."""
    if job["status"] in FINISHED:
        raise JobFinishedError(f"job {job['id']} already {job['status']}")
    await asyncio.to_thread(jobs.request_cancel, job["id"])
    if job["status"] == "queued":
        await asyncio.to_thread(jobs.finish, job["id"], "cancelled", None, "cancelled by request before it started")
    runner.wake()
    return await asyncio.to_thread(jobs.get, job["id"]) or job
