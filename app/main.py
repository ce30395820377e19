"""Builds the FastAPI application; `app.main:app` is the ASGI entry point.

See docs/design.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi

from app.api.auth import add_security_scheme
from app.api.gateway import Gateway
from app.api.json_body import add_documented_bodies
from app.api.responses import ValidationErrorPublic
from app.api.routes import datasets, health, jobs, models, monitoring, predict, schedules, tfserving, v2
from app.api.routes import metrics as metrics_route
from app.api.upload_limit import UploadLimit
from app.core import metrics
from app.core.config import Settings, get_settings
from app.core.errors import install_error_handlers
from app.core.runtime import settle_heap, tune_for_serving
from app.core.stores import model_store
from app.datasets import DatasetStore
from app.datasets.remote import open_datasets
from app.inference.client import InferenceProcess
from app.jobs.backend import JobBackend, open_job_backend
from app.jobs.store import FINISHED, QUEUED, RUNNING
from app.ledger.demotion import demotions_of
from app.ledger.monitor import Monitor
from app.ledger.recorder import Ledger
from app.online import open_ledger, refresh_bands, watch_bands
from app.reports import VersionReports
from app.schedules.service import utc_now
from app.schedules.store import open_schedules
from app.schedules.ticker import Scheduler, tick_forever
from app.serving.registry import ModelRegistry
from training.errors import StockcastError

logger = logging.getLogger("stockcast")

DESCRIPTION = """
Forecasts of daily stock prices from recurrent networks (SimpleRNN, LSTM, GRU)
trained on OHLCV data. Upload a CSV to `/datasets`, start a training job with
`/train`, watch it at `/jobs/{id}`, and ask `/predict` for forecasts with
conformal prediction intervals. Every figure is in price units and compared
with the naive last-value forecast.
"""


def register_sample_dataset(settings: Settings, datasets: DatasetStore) -> None:
    """Make the bundled sample available as a dataset so /train works out of the box."""
    name = settings.bootstrap_model
    if not settings.sample_data.is_file():
        return
    try:
        if name in datasets.names():
            return
        datasets.save(name, settings.sample_data.read_bytes(), settings.sample_data.name)
    except StockcastError as error:
        logger.error("sample dataset %s not registered: %s", settings.sample_data, error)


def document_validation_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """Document the 422 the service answers (`ValidationErrorPublic`), not FastAPI's default `HTTPValidationError`.

    FastAPI adds its own 422 to every route with parameters or a body that
    does not declare one; the handler in `app.core.errors` answers another shape.
    """
    ours = f"#/components/schemas/{ValidationErrorPublic.__name__}"
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            content = operation.get("responses", {}).get("422", {}).get("content", {}).get("application/json")
            if content is not None and content.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
                content["schema"] = {"$ref": ours}
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    return schema


def service_state(
    registry: ModelRegistry, jobs: JobBackend, ledger: Ledger | None = None, monitor: Monitor | None = None
) -> dict[str, Any]:
    """What /metrics reads from the running service when scraped (`metrics.StateCollector`)."""
    served = registry.served_versions()
    state: dict[str, Any] = {
        "versions": registry.loaded_versions(),
        "served": served,
        "engines": registry.served_engines(),
        "jobs": {status: len(jobs.list(status=status, limit=1_000_000)) for status in (QUEUED, RUNNING, *FINISHED)},
        "restarts": registry.inference.restarts,
    }
    if ledger is not None:
        state["ledger"] = {"dropped": ledger.dropped, "written": ledger.written}
    if monitor is not None:
        # An unreachable ledger leaves its metrics out, not the rest of the scrape.
        try:
            state["online"] = monitor.summaries(served)
        except Exception:
            logger.exception("metrics: reading the ledger's scores failed; the online metrics are left out")
        state["demotions"] = {model: demotions_of(registry.store.alias_log(model)) for model in sorted(served)}
    return state


def create_app(
    settings: Settings | None = None, inference: Callable[[Settings], InferenceProcess] | None = None
) -> FastAPI:
    """An app bound to `settings` (tests pass their own; the server reads the environment).

    `inference` builds the registry's inference backend at each start-up (tests pass a fake); None: the real one.
    """
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = model_store(settings)
        registry = ModelRegistry(store, settings, inference(settings) if inference is not None else None)

        async def on_job_finished(job: dict[str, Any]) -> dict[str, Any]:
            name = str(job["request"]["model"])
            await registry.refresh(name)
            state = registry.models.get(name)
            return {
                "default_version": state.served.version if state and state.served else None,
                "error": state.error if state else None,
            }

        async def on_models_changed(name: str) -> None:
            await registry.refresh(name)
            # A queue worker's scoring announces the models it scored: their bands adapt.
            await refresh_bands(app, name)

        # Embedded (SQLite, jobs run here) or scaled out (PostgreSQL, jobs run by app.worker processes).
        job_backend = open_job_backend(settings, on_job_finished, on_models_changed)
        # Changes to one dataset take turns across replicas through the job backend's shared lock.
        datasets = open_datasets(settings, shared_lock=job_backend.shared_lock)
        app.state.settings, app.state.store, app.state.datasets = settings, store, datasets
        app.state.jobs, app.state.registry = job_backend, registry
        app.state.reports = VersionReports(store, settings.reports_dir)
        schedule_store = open_schedules(settings)
        app.state.schedules = schedule_store
        register_sample_dataset(settings, datasets)
        ledger = open_ledger(settings, datasets) if settings.ledger else None
        app.state.ledger = ledger
        monitor = Monitor.for_settings(ledger.store, settings) if ledger is not None else None
        app.state.monitor = monitor
        if ledger is not None and settings.adaptive_bands:
            watch_bands(registry, ledger, settings)
        # Starlette spools uploads over 1 MB to temporary files: into the data folder, not /tmp.
        # Never removed here: another app in the same process (tests) may point the module there.
        spool = settings.temp_dir / "api"
        spool.mkdir(parents=True, exist_ok=True)
        tempfile.tempdir = str(spool)
        tune_for_serving()
        await registry.start()
        # After the registry, which finished jobs refresh. On a database
        # without the schema this raises: the API refuses to start and says
        # which command to run.
        try:
            await job_backend.start()
        except BaseException:
            await registry.stop()
            raise
        # Embedded, this process ticks the schedules; scaled out, the queue workers do (app.worker).
        ticker: asyncio.Task[None] | None = None
        if settings.database_url is None:
            scheduler = Scheduler(schedule_store, job_backend, store, datasets, settings.max_queued_jobs)
            # Through app.state, so a test that moves the clock moves the ticker's too.
            ticker = asyncio.create_task(
                tick_forever(scheduler, settings.schedule_tick_seconds, lambda: app.state.clock()), name="schedules"
            )
        # Freeze what start-up left (FastAPI, pydantic, pandas): full garbage
        # collections then walk only what requests create.
        if ledger is not None:
            ledger.start()
        settle_heap()
        # Restored at shutdown rather than cleared: an app started and stopped inside another's
        # lifetime (tests run several in one process) must not leave the outer one's /metrics blank.
        outer_source = metrics.STATE.source
        metrics.STATE.source = lambda: service_state(registry, job_backend, ledger, monitor)
        metrics_server = metrics.serve_separately(settings) if settings.metrics else None
        try:
            yield
        finally:
            metrics.STATE.source = outer_source
            if metrics_server is not None:
                metrics_server.shutdown()
            if ticker is not None:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker
            await asyncio.to_thread(schedule_store.close)
            await job_backend.stop()
            await registry.stop()
            if ledger is not None:
                await ledger.stop()

    app = FastAPI(title="stockcast", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.clock = utc_now
    metrics.ENABLED = settings.metrics
    install_error_handlers(app)
    app.add_middleware(UploadLimit, max_bytes=settings.max_upload_bytes)
    # Added last, so outermost: no request reaches a route, or a direct answer, without its checks.
    # It answers the hot inference routes itself (`app.api.gateway.DIRECT_ANSWERS`): no other layer on the way.
    app.add_middleware(Gateway, settings=settings)
    if settings.cors_origins:
        # Outside the gateway: a browser's preflight carries no key and is answered here.
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"], allow_headers=["*"]
        )
    # Requests are matched against routes in order: /predict/batch, the hottest routed one, first.
    for module in (predict, health, models, monitoring, schedules, datasets, jobs, v2, tfserving):
        app.include_router(module.router)
    if settings.metrics and settings.metrics_port is None:
        app.include_router(metrics_route.router)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = add_security_scheme(
                document_validation_errors(
                    add_documented_bodies(
                        get_openapi(
                            title=app.title, version=app.version, description=app.description, routes=app.routes
                        )
                    )
                ),
                settings.metrics_scope,
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


app = create_app()
