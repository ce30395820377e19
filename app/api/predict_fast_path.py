"""POST /predict's usual request, answered in front of FastAPI's routing.

Why: under load the API process's event loop is the service's bottleneck,
and a /predict request, unlike a constant answer, suspends while its batch
runs and resumes later. Through FastAPI's route that request crossed the
exception middleware, the router, the request and response wrappers and
dependency solving, and cost the API process about 300 µs of CPU; answered
here, with the same parsing, lookup, batching and encoding, about 160 µs
(`bench/request_steps.py` with and without `--route`). `bench/serve.py`
measures the throughput both ways in one run (service, service-route).

What it answers: POST /predict with a body that `parse_array_window`
accepts (the window as arrays, a plain version selector), the form trading
back ends send. Everything else (other paths and methods, windows as rows,
malformed bodies) goes on to FastAPI with the body already read, so every
validation message still comes from one place, and the FastAPI route still
documents /predict in OpenAPI. Domain errors (unknown model, a window of the
wrong shape, inference restarting) get the same answer as from the route,
from `error_response`; anything else propagates to the app's server-error
middleware and becomes the same logged 500.

Installed as the innermost user middleware, so FastAPI's outer layers (the
500 handler, telemetry, the body size limit) still wrap it.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.predict_body import parse_array_window
from app.core.errors import error_response
from app.serving.forecasting import predict_one
from training.errors import StockcastError

PATH = "/predict"
_JSON_HEADER = (b"content-type", b"application/json")


class PredictFastPath:
    """ASGI middleware: answers the usual POST /predict itself, passes everything else on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or _route_path(scope) != PATH:
            await self.app(scope, receive, send)
            return
        raw = await _read_body(receive)
        if raw is None:
            return  # The client went away before sending its whole body: nobody to answer.
        request = parse_array_window(raw)
        if request is None:
            await self.app(scope, _replay(raw, receive), send)
            return
        try:
            answer = await predict_one(scope["app"].state.registry, request)
        except StockcastError as error:
            await error_response(error)(scope, receive, send)
            return
        # The headers Starlette's Response(answer, media_type="application/json") sends.
        headers = [(b"content-length", str(len(answer)).encode("latin-1")), _JSON_HEADER]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})


def _route_path(scope: Scope) -> str:
    """The path as FastAPI's router matches it: without the root path a proxy mounts the app under."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None if the client disconnected first."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the already-read body over once, then listens to the client again."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


__all__ = ["PATH", "PredictFastPath"]
