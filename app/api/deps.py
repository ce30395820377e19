"""Annotated dependencies: each route names what it needs, the app state provides it.

The getters are `async def` on purpose: FastAPI runs plain `def` dependencies
in a worker thread, a hand-off the event loop pays for on every request.
See docs/design.md, "Serving path".
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Request

from app.api.auth import ANONYMOUS
from app.core.config import Settings
from app.datasets import DatasetStore
from app.jobs.backend import JobBackend
from app.ledger.monitor import LedgerOffError, Monitor
from app.reports import VersionReports
from app.schedules.store import ScheduleStore
from app.serving.registry import ModelRegistry
from training.errors import NotFoundError
from training.files import check_job_id
from training.store import ModelStore


async def get_settings(request: Request) -> Settings:
    """The app's settings."""
    return request.app.state.settings  # type: ignore[no-any-return]


async def get_registry(request: Request) -> ModelRegistry:
    """Loaded, served versions."""
    return request.app.state.registry  # type: ignore[no-any-return]


def registry_of(request: Request) -> ModelRegistry:
    """The registry, read straight from the app state, for the hot routes.

    Resolving even an `async def` dependency walks FastAPI's dependency
    machinery on every request.
    """
    return request.app.state.registry  # type: ignore[no-any-return]


def settings_of(request: Request) -> Settings:
    """The settings, read straight from the app state (see `registry_of`)."""
    return request.app.state.settings  # type: ignore[no-any-return]


async def get_store(request: Request) -> ModelStore:
    """The model store on disk."""
    return request.app.state.store  # type: ignore[no-any-return]


async def get_jobs(request: Request) -> JobBackend:
    """Job records and dispatch (embedded or PostgreSQL)."""
    return request.app.state.jobs  # type: ignore[no-any-return]


async def get_datasets(request: Request) -> DatasetStore:
    """Uploaded datasets."""
    return request.app.state.datasets  # type: ignore[no-any-return]


async def get_reports(request: Request) -> VersionReports:
    """Version report files."""
    return request.app.state.reports  # type: ignore[no-any-return]


async def get_monitor(request: Request) -> Monitor:
    """The ledger's monitoring side; 409 when the ledger is off."""
    monitor: Monitor | None = request.app.state.monitor
    if monitor is None:
        raise LedgerOffError()
    return monitor


async def get_schedules(request: Request) -> ScheduleStore:
    """Retraining schedules (SQLite beside the job records, or PostgreSQL)."""
    return request.app.state.schedules  # type: ignore[no-any-return]


async def get_clock(request: Request) -> Callable[[], dt.datetime]:
    """The clock schedules read (tests move it)."""
    return request.app.state.clock  # type: ignore[no-any-return]


async def get_caller(request: Request) -> str:
    """The name of the API key that made the request (`anonymous` when the service has no keys)."""
    return getattr(request.state, "key_name", ANONYMOUS)  # type: ignore[no-any-return]


CallerDep = Annotated[str, Depends(get_caller)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
StoreDep = Annotated[ModelStore, Depends(get_store)]
JobsDep = Annotated[JobBackend, Depends(get_jobs)]
DatasetsDep = Annotated[DatasetStore, Depends(get_datasets)]
ReportsDep = Annotated[VersionReports, Depends(get_reports)]
MonitorDep = Annotated[Monitor, Depends(get_monitor)]
SchedulesDep = Annotated[ScheduleStore, Depends(get_schedules)]
ClockDep = Annotated[Callable[[], dt.datetime], Depends(get_clock)]


def valid_job(job_id: str, jobs: JobsDep) -> dict[str, Any]:
    """The job with this id; 422 for an id no job can have, else 404 if there is none."""
    check_job_id(job_id)
    job = jobs.get(job_id)
    if job is None:
        raise NotFoundError(f"unknown job '{job_id}'")
    return job


def valid_model(name: str, store: StoreDep) -> str:
    """A model name that has versions in the store; 422 for a name that breaks the name rule, else 404."""
    if not store.versions(name):
        raise NotFoundError(f"unknown model '{name}'; models: {store.model_names()}")
    return name


JobDep = Annotated[dict[str, Any], Depends(valid_job)]
ModelNameDep = Annotated[str, Depends(valid_model)]
