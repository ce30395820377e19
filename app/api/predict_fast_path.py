"""POST /predict answered in front of FastAPI's routing, by the one /predict handler.

Why: under load the API process's event loop is the service's bottleneck,
and a /predict request, unlike a constant answer, suspends while its batch
runs and resumes later. Through FastAPI's route that request crossed the
exception middleware, the router, the request and response wrappers and
dependency solving, and cost the API process about 300 µs of CPU; answered
here, about 160 µs (`bench/request_steps.py` with and without `--route`).
A plain Starlette route placed first in the router was tried in its place:
it kept 75-87 % of this middleware's throughput in two `bench/serve.py`
runs (docs/design.md, "Serving path"), short of the 90 % asked, so the
middleware stays.

What it answers: every POST /predict, whatever the body, with
`answer_predict` (`app.api.routes.predict`), the handler the FastAPI route
calls too: one parse of the body, the lookup, the forecast, and errors
rendered as the app's exception handlers render them. Anything unexpected
propagates to the app's server-error middleware and becomes the same logged
500. Other paths and methods go on to FastAPI.

Installed right inside the gateway (`app.api.gateway`, which checks keys and
limits first), so a /predict request crosses none of the app's other
layers, and FastAPI's outer ones (the 500 handler, telemetry, the body size
limit) still wrap it.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.asgi import read_body, route_path
from app.api.routes.predict import answer_predict

PATH = "/predict"


class PredictFastPath:
    """ASGI middleware: answers POST /predict itself, passes everything else on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or route_path(scope) != PATH:
            await self.app(scope, receive, send)
            return
        raw = await read_body(receive)
        if raw is None:
            return  # The client went away before sending its whole body: nobody to answer.
        response = await answer_predict(scope["app"].state.registry, raw)
        await response(scope, receive, send)


__all__ = ["PATH", "PredictFastPath"]
