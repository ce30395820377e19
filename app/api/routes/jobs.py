"""Training jobs: start, watch, list, cancel."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, status

from app.api.deps import DatasetsDep, JobDep, JobsDep, RunnerDep
from app.api.examples import TRAIN_EXAMPLES
from app.api.schemas import JobAccepted, JobPublic, TrainRequest
from app.jobs.store import FINISHED
from training.errors import StockcastError

router = APIRouter(tags=["training"])


class JobFinishedError(StockcastError):
    """The job already ended and cannot be cancelled."""

    status_code = 409


@router.post("/train", status_code=status.HTTP_202_ACCEPTED, response_model=JobAccepted)
async def create_training_job(
    request: Annotated[TrainRequest, Body(openapi_examples=TRAIN_EXAMPLES)],
    jobs: JobsDep,
    runner: RunnerDep,
    datasets: DatasetsDep,
) -> JobAccepted:
    """Queue a training job; it runs in a separate worker process. Poll GET /jobs/{job_id}."""
    from training.pipeline import TrainConfig

    datasets.csv_path(request.dataset)  # 404 now rather than a failed job later
    settings = request.model_dump(exclude_none=True, exclude={"model", "dataset"})
    for key in ("features",):
        if key in settings:
            settings[key] = tuple(settings[key])
    TrainConfig(**settings)  # 422 now for inconsistent settings (label not among features, ...)
    job = jobs.create(request.model_dump(exclude_none=True))
    runner.wake()
    return JobAccepted(job_id=job["id"], status=job["status"], location=f"/jobs/{job['id']}")


@router.get("/jobs", response_model=dict[str, list[JobPublic]])
async def read_jobs(
    jobs: JobsDep,
    status_filter: str | None = Query(
        None, alias="status", description="queued, running, succeeded, failed, cancelled"
    ),
    limit: int = Query(100, ge=1, le=1000),
) -> dict[str, Any]:
    """Jobs, newest first."""
    return {"jobs": jobs.list(status=status_filter, limit=limit)}


@router.get("/jobs/{job_id}", response_model=JobPublic, responses={404: {"description": "Unknown job."}})
async def read_job(job: JobDep) -> dict[str, Any]:
    """Status, progress (epoch of epochs, losses), error, and the produced version with its metrics."""
    return job


@router.delete("/jobs/{job_id}", response_model=JobPublic, responses={404: {"description": "Unknown job."}, 409: {}})
async def cancel_job(job: JobDep, jobs: JobsDep, runner: RunnerDep) -> dict[str, Any]:
    """Cancel a queued or running job; no partial version is ever saved."""
    if job["status"] in FINISHED:
        raise JobFinishedError(f"job {job['id']} already {job['status']}")
    jobs.request_cancel(job["id"])
    if job["status"] == "queued":
        jobs.finish(job["id"], "cancelled", error="cancelled by request before it started")
    runner.wake()
    return jobs.get(job["id"]) or job
