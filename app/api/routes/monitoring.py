"""How a model's served forecasts did once their closes arrived: the monitoring answer and its chart.

Thin: the ledger's `Monitor` reads the scores and computes (`app.ledger.monitoring`)
or draws (`app.ledger.chart`) in a worker thread, off the event loop; no
Keras is needed, so nothing is drawn in a child process. 409 when the
ledger is off. See docs/ledger.md, "Monitoring".
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import Response

from app.api.deps import ModelNameDep, MonitorDep, RegistryDep, StoreDep
from app.api.examples import MONITORING_EXAMPLE
from app.api.responses import MonitoringPublic, error_responses

router = APIRouter(prefix="/models", tags=["monitoring"])


@router.get(
    "/{name}/monitoring",
    response_model=MonitoringPublic,
    responses={
        200: {"content": {"application/json": {"example": MONITORING_EXAMPLE}}},
        **error_responses(404, 409, 422, 503),
    },
)
async def read_monitoring(
    name: ModelNameDep, monitor: MonitorDep, registry: RegistryDep, store: StoreDep
) -> MonitoringPublic:
    """Coverage, skill against naive, direction and status of the served forecasts, per version and served_as.

    Over the last 20, 60 and 250 scored sessions and since the version went
    live; replayed forecasts apart; the shadow challenger beside the champion,
    with the paired live test. 409 when the forecast ledger is off.
    """
    aliases = await asyncio.to_thread(store.aliases, name)
    report = await asyncio.to_thread(monitor.report, name, registry.served_versions().get(name), aliases)
    return MonitoringPublic.model_validate(report)


@router.get(
    "/{name}/monitoring.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, **error_responses(404, 409, 422, 503)},
)
async def read_monitoring_chart(name: ModelNameDep, monitor: MonitorDep, registry: RegistryDep) -> Response:
    """Chart: the served version's step-1 forecasts and widest band against the actuals, and rolling coverage.

    A model without scored forecasts gets a chart that says so. Drawn on
    every request (it changes as closes arrive), so it is not cached.
    """
    png = await asyncio.to_thread(monitor.chart, name, registry.served_versions().get(name))
    return Response(content=png, media_type="image/png", headers={"Cache-Control": "no-cache"})
