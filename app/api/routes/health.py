"""Liveness and readiness.

See docs/design.md.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from app.api.deps import JobsDep, RegistryDep, StoreDep
from app.api.responses import HealthPublic, ReadyPublic, error_responses

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthPublic)
async def read_health() -> HealthPublic:
    """Liveness: 200 while the process is up."""
    return HealthPublic(status="ok")


@router.get(
    "/ready",
    response_model=ReadyPublic,
    response_model_exclude_unset=True,
    responses={
        **error_responses(404),
        503: {
            "model": ReadyPublic,
            "description": "Not ready: `detail` says why (a model, the inference process, or in scaled-out mode the"
            " job database).",
        },
    },
)
async def read_ready(
    registry: RegistryDep,
    jobs: JobsDep,
    store: StoreDep,
    model: Annotated[
        str | None, Query(description="Answer for this model only: its default version is loaded and answering.")
    ] = None,
) -> ReadyPublic | JSONResponse:
    """Readiness: the inference process answers and a model can be served (or, with `model`, that one can).

    An orchestrator should probe `/ready` without `model`: one broken model
    (listed under `not_loaded` and `problems`) does not take the others out.
    In scaled-out mode the job database must answer too: a replica that
    cannot queue or read jobs is taken out of the load balancer. An object
    store that does not answer is reported under `store` but keeps the
    replica ready: what is loaded still serves.
    """
    reason, status = await registry.readiness(model)
    reason = reason or await asyncio.to_thread(jobs.problem)
    named = {"model": model} if model is not None else {}
    if store.remote:
        store_problem = await asyncio.to_thread(store.problem)
        named["store"] = store_problem or "reachable"
    if reason is None:
        return ReadyPublic.model_validate({"status": "ready", **named, **status, "ready": True})
    content = {"status": "not ready", "detail": reason, **named, **status, "ready": False}
    return JSONResponse(status_code=503, content=content)
