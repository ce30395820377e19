"""Models, versions, aliases and version reports."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body
from fastapi.responses import Response

from app.api.deps import ModelNameDep, RegistryDep, StoreDep
from app.api.examples import ALIAS_EXAMPLES
from app.api.schemas import AliasUpdate
from app.serving.catalog import describe_model

router = APIRouter(prefix="/models", tags=["models"])


@router.get("")
async def read_models(store: StoreDep, registry: RegistryDep) -> dict[str, Any]:
    """Every model with its versions, aliases, headline figures and the version served by default."""
    return {"models": [describe_model(store, registry, name) for name in store.model_names()]}


@router.get("/{name}", responses={404: {"description": "Unknown model."}})
async def read_model(name: ModelNameDep, store: StoreDep, registry: RegistryDep) -> dict[str, Any]:
    """One model: versions, aliases, default version."""
    return describe_model(store, registry, name)


@router.get("/{name}/versions/{version}", responses={404: {"description": "Unknown model or version."}})
async def read_version(name: ModelNameDep, version: int, store: StoreDep) -> dict[str, Any]:
    """Full metadata of one version (hyper-parameters, scaler, data, split, metrics, backtest)."""
    return store.read_metadata(name, version)


@router.get(
    "/{name}/versions/{version}/report.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, 404: {"description": "Unknown model/version or data gone."}},
)
async def read_version_report(name: ModelNameDep, version: int, store: StoreDep) -> Response:
    """Chart: actual vs forecast with intervals over the test period, residuals, backtest table."""
    import asyncio

    from training.charts import render_version_report

    store.read_metadata(name, version)
    png = await asyncio.to_thread(render_version_report, store, name, version)
    return Response(content=png, media_type="image/png")


@router.get("/{name}/aliases")
async def read_aliases(name: ModelNameDep, store: StoreDep) -> dict[str, Any]:
    """Current aliases and the log of every change (from, to, when, why)."""
    return {"aliases": store.aliases(name), "log": store.alias_log(name)}


@router.put(
    "/{name}/aliases/{alias}",
    responses={
        404: {"description": "Unknown model or version."},
        409: {"description": "The version cannot be loaded; the alias keeps its previous version."},
    },
)
async def update_alias(
    name: ModelNameDep,
    alias: str,
    update: Annotated[AliasUpdate, Body(openapi_examples=ALIAS_EXAMPLES)],
    store: StoreDep,
    registry: RegistryDep,
) -> dict[str, Any]:
    """Set or roll back an alias (e.g. point `champion` at an earlier version); takes effect at once."""
    entry = await registry.move_alias(name, alias, update.version, reason=update.reason or "set over HTTP")
    return {"aliases": store.aliases(name), "change": entry}
