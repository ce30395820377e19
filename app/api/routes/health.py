"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.api.deps import RegistryDep

router = APIRouter(tags=["health"])


@router.get("/health")
async def read_health() -> dict[str, str]:
    """Liveness: 200 while the process is up."""
    return {"status": "ok"}


@router.get("/ready", responses={503: {"description": "Not every served model is loaded and warmed up."}})
async def read_ready(registry: RegistryDep) -> Any:
    """Readiness: 200 only when every served model is loaded, warmed up and held by the running inference process."""
    status = registry.status()
    if status["ready"]:
        return {"status": "ready", **status}
    inference = status["inference_process"]
    if not registry.started:
        reason = "starting up"
    elif inference["pid"] is None:
        reason = f"the inference process is restarting ({inference['last_exit']})"
    else:
        reason = f"models not loaded: {status['not_loaded']}"
    return JSONResponse(status_code=503, content={"status": "not ready", "detail": reason, **status})
