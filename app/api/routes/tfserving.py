"""TensorFlow Serving's REST API routes: version status, metadata and :predict, with labels as aliases.

Thin: each route calls `app.api.protocols.tfserving`. The three :predict
routes only document their paths: the gateway answers them before routing
(`app.api.gateway.DIRECT_ANSWERS`). Errors are TF Serving's
`{"error": message}` (`ProtocolRoute`). The `:predict` verb is part of the
last path segment, matched as a literal suffix after the `{name}` (or
`{version}`, `{label}`) parameter. See docs/design.md, "Serving path".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.types import DecoratedCallable

from app.api.asgi import AnsweredByGatewayError
from app.api.deps import RegistryDep
from app.api.examples import TF_SERVING_EXAMPLES
from app.api.protocols import tfserving
from app.api.protocols.common import ProtocolRoute, parse_version
from app.api.protocols.schemas import TFMetadata, TFModelStatus, TFPredictResponse, protocol_errors
from app.serving.registry import ModelRegistry

router = APIRouter(prefix="/v1/models", tags=["tensorflow serving rest"], route_class=ProtocolRoute)

# What a route can answer besides 200: lookups that may load a version can also meet a broken one
# (409) or a restarting inference process (503); predictions can also fail in the network (500).
STATUS_ERRORS = protocol_errors(404, 422)
LOADING_ERRORS = protocol_errors(404, 409, 422, 503)
PREDICT_ERRORS = protocol_errors(404, 409, 422, 500, 503)
PREDICT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "examples": TF_SERVING_EXAMPLES,
            }
        },
    }
}


def _status(registry: ModelRegistry, name: str, versions: list[int]) -> dict[str, Any]:
    loaded = {version for version in versions if registry.loaded(name, version) is not None}
    return tfserving.version_status(versions, loaded)


@router.get("/{name}", response_model=TFModelStatus, responses=STATUS_ERRORS)
async def read_model_status(name: str, registry: RegistryDep) -> dict[str, Any]:
    """Status of every version: AVAILABLE when loaded, END when it would be loaded by its first request."""
    return _status(registry, name, registry.versions_of(name))


@router.get("/{name}/versions/{version}", response_model=TFModelStatus, responses=STATUS_ERRORS)
async def read_version_status(name: str, version: str, registry: RegistryDep) -> dict[str, Any]:
    """Status of one version."""
    return _status(registry, name, [parse_version(registry, name, version)])


@router.get("/{name}/labels/{label}", response_model=TFModelStatus, responses=LOADING_ERRORS)
async def read_label_status(name: str, label: str, registry: RegistryDep) -> dict[str, Any]:
    """Status of the version a label (alias) points at."""
    served = await registry.get(name, alias=label)
    return _status(registry, name, [served.version])


@router.get("/{name}/metadata", response_model=TFMetadata, responses=LOADING_ERRORS)
async def read_model_metadata(name: str, registry: RegistryDep) -> dict[str, Any]:
    """SignatureDef of the default version (input `window`, outputs in price units) and its gate evidence."""
    return tfserving.model_metadata(await registry.get(name))


@router.get("/{name}/versions/{version}/metadata", response_model=TFMetadata, responses=LOADING_ERRORS)
async def read_version_metadata(name: str, version: str, registry: RegistryDep) -> dict[str, Any]:
    """SignatureDef and gate evidence of one version."""
    return tfserving.model_metadata(await registry.get(name, version=parse_version(registry, name, version)))


@router.get("/{name}/labels/{label}/metadata", response_model=TFMetadata, responses=LOADING_ERRORS)
async def read_label_metadata(name: str, label: str, registry: RegistryDep) -> dict[str, Any]:
    """SignatureDef and gate evidence of the version a label (alias) points at."""
    return tfserving.model_metadata(await registry.get(name, alias=label))


def predict_route(path: str) -> Callable[[DecoratedCallable], DecoratedCallable]:
    """Register a :predict route at `path`; the three share their answer model, error answers and body examples."""
    return router.post(path, response_model=TFPredictResponse, responses=PREDICT_ERRORS, openapi_extra=PREDICT_BODY)


@predict_route("/{name}:predict")
async def create_prediction(name: str, request: Request) -> Response:
    """Forecast windows (`instances` or `inputs`) with the default version; prices and bounds per named output."""
    raise AnsweredByGatewayError(request.url.path)


@predict_route("/{name}/versions/{version}:predict")
async def create_version_prediction(name: str, version: str, request: Request) -> Response:
    """Forecast windows with one pinned version."""
    raise AnsweredByGatewayError(request.url.path)


@predict_route("/{name}/labels/{label}:predict")
async def create_label_prediction(name: str, label: str, request: Request) -> Response:
    """Forecast windows with the version a label (alias) points at."""
    raise AnsweredByGatewayError(request.url.path)
