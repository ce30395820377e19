"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.api.deps import RegistryDep
from app.api.responses import HealthPublic, ReadyPublic

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthPublic)
async def read_health() -> HealthPublic:
    """Liveness: 200 while the process is up."""
    return HealthPublic(status="ok")


@router.get(
    "/ready",
    response_model=ReadyPublic,
    response_model_exclude_unset=True,
    responses={503: {"model": ReadyPublic, "description": "Not every served model is loaded and warmed up."}},
)
async def read_ready(registry: RegistryDep) -> ReadyPublic | JSONResponse:
    """Readiness: 200 only when every served model is loaded, warmed up and held by the running inference process."""
    status = registry.status()
    if status["ready"]:
        return ReadyPublic.model_validate({"status": "ready", **status})
    inference = status["inference_process"]
    if not registry.started:
        reason = "starting up"
    elif inference["pid"] is None:
        reason = f"the inference process is restarting ({inference['last_exit']})"
    else:
        reason = f"models not loaded: {status['not_loaded']}"
    return JSONResponse(status_code=503, content={"status": "not ready", "detail": reason, **status})
