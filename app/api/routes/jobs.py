"""Training jobs: start, watch, list, cancel.

Plain `def` routes: job records are SQLite or PostgreSQL calls, which FastAPI
runs in its thread pool instead of on the event loop that serves /predict.
The job backend (embedded or scaled out) hides where records live and who
runs the jobs.
See docs/design.md.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query, Response, status

from app.api.deps import CallerDep, DatasetsDep, JobDep, JobsDep, SettingsDep, StoreDep
from app.api.examples import TRAIN_EXAMPLES
from app.api.responses import error_responses
from app.api.schemas import JobAccepted, JobPublic, JobsPublic, TrainRequest
from app.jobs.store import Submission
from training.config import TrainConfig

router = APIRouter(tags=["training"])
# Printable ASCII, as the IETF Idempotency-Key draft's examples (UUIDs and the like).
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"


@router.post(
    "/train",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobAccepted,
    # 409 and 503 only in scaled-out mode: a job of the model already waits; the database is unreachable.
    responses=error_responses(400, 404, 409, 422, 429, 503),
)
def create_training_job(
    request: Annotated[TrainRequest, Body(openapi_examples=TRAIN_EXAMPLES)],
    jobs: JobsDep,
    datasets: DatasetsDep,
    store: StoreDep,
    service_settings: SettingsDep,
    caller: CallerDep,
    response: Response,
    idempotency_key: Annotated[
        str | None,
        Header(
            pattern=IDEMPOTENCY_KEY_PATTERN,
            description="Any unique string (1-255 printable characters): a retry with the same key and request"
            " answers the job the first call queued instead of queueing another.",
        ),
    ] = None,
) -> JobAccepted:
    """Queue a training job; it runs in a separate worker process. Poll GET /jobs/{job_id}."""
    datasets.csv_path(request.dataset)  # 404 now rather than a failed job later
    if store.remote:
        store.check_writable(request.model)  # 503 now, while the object store is unreachable
    settings = request.model_dump(exclude_none=True, exclude={"model", "dataset"})
    TrainConfig(**settings)  # 422 now for inconsistent settings (label not among features, ...)
    job, created = jobs.submit(
        Submission(
            request.model_dump(exclude_none=True),
            max_queued=service_settings.max_queued_jobs,
            submitted_by=caller,
            # Keys are the caller's own: another key's identical string names another request.
            idempotency_key=f"{caller}\n{idempotency_key}" if idempotency_key is not None else None,
        )
    )
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return JobAccepted(job_id=job["id"], status=job["status"], location=f"/jobs/{job['id']}")


@router.get("/jobs", response_model=JobsPublic, responses=error_responses(422, 503))
def read_jobs(
    jobs: JobsDep,
    status_filter: str | None = Query(
        None, alias="status", description="queued, running, succeeded, failed, cancelled"
    ),
    limit: int = Query(100, ge=1, le=1000),
) -> JobsPublic:
    """Jobs, newest first."""
    return JobsPublic(jobs=[JobPublic.model_validate(job) for job in jobs.list(status=status_filter, limit=limit)])


@router.get("/jobs/{job_id}", response_model=JobPublic, responses=error_responses(404, 503))
def read_job(job: JobDep) -> dict[str, Any]:
    """Status, progress (epoch of epochs, losses), attempts, error, and the produced version with its metrics."""
    return job


@router.delete("/jobs/{job_id}", response_model=JobPublic, responses=error_responses(404, 409, 503))
def cancel_job(job: JobDep, jobs: JobsDep, caller: CallerDep) -> dict[str, Any]:
    """Cancel a queued or running job, on whatever machine it runs; no partial version is ever saved."""
    return jobs.cancel(job["id"], job, by=caller)
