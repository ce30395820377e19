"""The Open Inference Protocol (KServe V2) REST routes, with Triton's binary tensors: health, metadata, infer.

Thin: each route calls `app.api.protocols.v2`. The two infer routes only
document their paths: the gateway answers them before routing
(`app.api.gateway.DIRECT_ANSWERS`). Errors are the protocol's
`{"error": message}` (`ProtocolRoute`). See docs/design.md, "Serving path".
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from app.api.asgi import AnsweredByGatewayError
from app.api.deps import RegistryDep
from app.api.protocols import v2
from app.api.protocols.common import ProtocolRoute, parse_version
from app.api.protocols.schemas import (
    V2InferResponse,
    V2Live,
    V2ModelMetadata,
    V2ModelReady,
    V2Ready,
    V2ServerMetadata,
    protocol_errors,
)
from app.serving.registry import ModelRegistry

router = APIRouter(prefix="/v2", tags=["open inference protocol (v2)"], route_class=ProtocolRoute)

INFER_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "example": {
                    "id": "42",
                    "inputs": [{"name": "window", "datatype": "FP32", "shape": [1, 2, 5], "data": [[[1, 2, 3, 4, 5]]]}],
                    "outputs": [{"name": "forecast"}],
                }
            },
            "application/octet-stream": {
                "schema": {
                    "type": "string",
                    "format": "binary",
                    "description": "Triton binary tensor data: the JSON header (its length in the "
                    "Inference-Header-Content-Length header), then each input's little-endian bytes.",
                }
            },
        },
    }
}


@router.get("", response_model=V2ServerMetadata)
async def read_server_metadata() -> dict[str, Any]:
    """Server metadata: name, version and the protocol extensions served (binary_tensor_data)."""
    return v2.server_metadata()


@router.get("/health/live", response_model=V2Live)
async def read_server_live() -> dict[str, bool]:
    """Liveness: 200 while the process is up."""
    return {"live": True}


@router.get("/health/ready", response_model=V2Ready, responses=protocol_errors(400))
async def read_server_ready(registry: RegistryDep) -> Any:
    """Readiness: 200 when every model's default version is loaded and held by the inference process (as /ready)."""
    status = registry.status()
    if status["ready"]:
        return {"ready": True}
    return JSONResponse(status_code=400, content={"ready": False, "error": f"not ready: {status['not_loaded']}"})


def _model_ready(registry: ModelRegistry, name: str, version_text: str | None) -> Response:
    version = parse_version(registry, name, version_text) if version_text is not None else None
    if registry.loaded(name, version) is None:
        what = f"model '{name}' version {version}" if version is not None else f"model '{name}'"
        reason = "loaded by the first request that names it" if version is not None else "not loaded"
        return JSONResponse(status_code=400, content={"ready": False, "error": f"{what} is not ready ({reason})"})
    return JSONResponse({"name": name, "ready": True})


@router.get("/models/{name}/ready", response_model=V2ModelReady, responses=protocol_errors(400, 404, 422))
async def read_model_ready(name: str, registry: RegistryDep) -> Response:
    """Model readiness: 200 when its default version is loaded, warmed up and held by the inference process."""
    registry.versions_of(name)  # 404 for an unknown model, not a 400 "not ready"
    return _model_ready(registry, name, None)


@router.get(
    "/models/{name}/versions/{version}/ready", response_model=V2ModelReady, responses=protocol_errors(400, 404, 422)
)
async def read_model_version_ready(name: str, version: str, registry: RegistryDep) -> Response:
    """Version readiness: 200 when this version is loaded (a pinned version loads on its first request)."""
    return _model_ready(registry, name, version)


@router.get(
    "/models/{name}",
    response_model=V2ModelMetadata,
    response_model_exclude_none=True,
    responses=protocol_errors(404, 409, 422, 503),
)
async def read_model_metadata(name: str, registry: RegistryDep) -> dict[str, Any]:
    """Metadata of the default version: input `window` [-1, window, features], outputs in price units, gate evidence."""
    return v2.model_metadata(await registry.get(name), registry.versions_of(name))


@router.get(
    "/models/{name}/versions/{version}",
    response_model=V2ModelMetadata,
    response_model_exclude_none=True,
    responses=protocol_errors(404, 409, 422, 503),
)
async def read_model_version_metadata(name: str, version: str, registry: RegistryDep) -> dict[str, Any]:
    """Metadata of one version (loaded if it is not yet)."""
    served = await registry.get(name, version=parse_version(registry, name, version))
    return v2.model_metadata(served, registry.versions_of(name))


@router.post(
    "/models/{name}/infer",
    response_model=V2InferResponse,
    responses=protocol_errors(404, 409, 422, 500, 503),
    openapi_extra=INFER_BODY,
)
async def create_inference(name: str, request: Request) -> Response:
    """Forecast a batch of windows (input `window`, FP32 or FP64, JSON or binary) with the default version or an alias.

    `parameters.alias` picks an alias; outputs are prices and bounds: `forecast`,
    `lower_<level>`, `upper_<level>`, each [n, horizon] FP64; the response
    `parameters` carry the label, units and gate evidence.
    """
    raise AnsweredByGatewayError(request.url.path)


@router.post(
    "/models/{name}/versions/{version}/infer",
    response_model=V2InferResponse,
    responses=protocol_errors(404, 409, 422, 500, 503),
    openapi_extra=INFER_BODY,
)
async def create_version_inference(name: str, version: str, request: Request) -> Response:
    """Forecast a batch of windows with one pinned version (see the unversioned route)."""
    raise AnsweredByGatewayError(request.url.path)
