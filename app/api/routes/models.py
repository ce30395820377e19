"""Models, versions, aliases and version reports.

Plain `def` routes, except where the registry is awaited: they read files,
and FastAPI runs plain routes in its thread pool, off the event loop.
See docs/design.md.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Body
from fastapi.responses import FileResponse

from app.api import catalog
from app.api.deps import CallerDep, JobsDep, ModelNameDep, RegistryDep, ReportsDep, StoreDep
from app.api.examples import ALIAS_EXAMPLES
from app.api.responses import (
    AliasChange,
    AliasesPublic,
    AliasUpdated,
    ModelPublic,
    ModelsPublic,
    VersionPublic,
    error_responses,
)
from app.api.schemas import AliasUpdate

router = APIRouter(prefix="/models", tags=["models"])


@router.get("", response_model=ModelsPublic, response_model_exclude_unset=True)
def read_models(store: StoreDep, registry: RegistryDep) -> ModelsPublic:
    """Every model with its versions, aliases, headline figures and the version served by default."""
    return catalog.describe_models(store, registry)


@router.get("/{name}", response_model=ModelPublic, response_model_exclude_unset=True, responses=error_responses(404))
def read_model(name: ModelNameDep, store: StoreDep, registry: RegistryDep) -> ModelPublic:
    """One model: versions, aliases, default version."""
    return catalog.describe_model(store, registry, name)


@router.get(
    "/{name}/versions/{version}",
    response_model=VersionPublic,
    response_model_exclude_unset=True,
    responses=error_responses(404, 409, 422),
)
def read_version(name: ModelNameDep, version: int, store: StoreDep) -> VersionPublic:
    """Full metadata of one version (hyper-parameters, scaler, data, split, metrics, backtest)."""
    return catalog.read_version(store, name, version)


@router.get(
    "/{name}/versions/{version}/report.png",
    response_class=FileResponse,
    responses={200: {"content": {"image/png": {}}}, **error_responses(404, 409, 422, 500)},
)
async def read_version_report(name: ModelNameDep, version: int, store: StoreDep, reports: ReportsDep) -> FileResponse:
    """Chart: actual vs forecast with intervals over the test period, residuals, backtest table.

    Drawn once per version, at training time (or on the first request, in a
    child process, for a version trained before that) and served from its file.
    """
    await asyncio.to_thread(store.read_metadata, name, version)
    return FileResponse(await reports.path(name, version), media_type="image/png")


@router.get("/{name}/aliases", response_model=AliasesPublic, responses=error_responses(404))
def read_aliases(name: ModelNameDep, store: StoreDep) -> AliasesPublic:
    """Current aliases and the log of every change (from, to, when, why)."""
    return AliasesPublic(
        aliases=store.aliases(name), log=[AliasChange.model_validate(entry) for entry in store.alias_log(name)]
    )


@router.put("/{name}/aliases/{alias}", response_model=AliasUpdated, responses=error_responses(400, 404, 409, 422))
async def update_alias(
    name: ModelNameDep,
    alias: str,
    update: Annotated[AliasUpdate, Body(openapi_examples=ALIAS_EXAMPLES)],
    store: StoreDep,
    registry: RegistryDep,
    jobs: JobsDep,
    caller: CallerDep,
) -> AliasUpdated:
    """Set or roll back an alias (e.g. point `champion` at an earlier version); takes effect at once.

    409 when the version cannot be loaded: the alias keeps its previous version.
    """
    entry = await registry.move_alias(name, alias, update.version, reason=update.reason or "set over HTTP", by=caller)
    # Scaled-out mode: the other replicas reload now rather than at their next poll of the store.
    await asyncio.to_thread(jobs.announce, name)
    aliases = await asyncio.to_thread(store.aliases, name)
    return AliasUpdated(aliases=aliases, change=AliasChange.model_validate(entry))
