"""POST /predict answered by the gateway itself, in front of FastAPI's routing, by the one /predict handler.

Why: under load the API process's event loop is the service's bottleneck,
and a /predict request, unlike a constant answer, suspends while its batch
runs and resumes later. Through FastAPI's route that request crossed the
exception middleware, the router, the request and response wrappers and
dependency solving, and cost the API process about 300 µs of CPU; answered
here, about 160 µs (`bench/request_steps.py` with and without `--route`).
A plain Starlette route placed first in the router was tried in its place:
it kept 75-87 % of this middleware's throughput in two `bench/serve.py`
runs (docs/design.md, "Serving path"), short of the 90 % asked, so the
fast path stays.

What it answers: every POST /predict, whatever the body, with
`answer_predict` (`app.api.routes.predict`), the handler the FastAPI route
calls too: one parse of the body, the lookup, the forecast, and errors
rendered as the app's exception handlers render them. Anything unexpected
propagates to the gateway, which logs it with the request id and answers
500, as for any route. Other paths and methods go on to FastAPI.

The gateway (`app.api.gateway`) calls `answer` for POST /predict once it
has checked the key and the limits, and sends the answer itself: a /predict
request crosses none of the app's other layers (it used to cross one more
middleware of its own and the gateway's wrapper around `send`), and
FastAPI's outer ones (the 500 handler, telemetry, the body size limit)
still wrap it.
"""

from __future__ import annotations

from starlette.responses import Response
from starlette.types import Scope

from app.api.routes.predict import answer_predict

PATH = "/predict"


async def answer(scope: Scope, raw: bytes) -> Response:
    """The answer to one POST /predict whose whole body is `raw` (`Gateway` sends it)."""
    return await answer_predict(scope["app"].state.registry, raw)


__all__ = ["PATH", "answer"]
