"""The protocols' inference requests, answered in front of FastAPI's routing, as /predict's usual request is.

Why: under load the API process's event loop is the service's bottleneck,
and FastAPI's routing, request wrappers and dependency solving cost a
request more than everything the protocol itself does (`bench/serve.py`:
the protocol rows beside /predict; `docs/design.md`, "Serving path"). The
protocol routes sit after the service's own in the route table, so each
request also paid for trying every route before them.

What it answers: POST /v2/models/{name}[/versions/{v}]/infer and POST
/v1/models/{name}[/versions/{v}|/labels/{label}]:predict, entirely, with
the same functions the FastAPI routes call (`app.api.protocols.v2.infer`,
`app.api.protocols.tfserving.predict`), and domain errors as the protocols'
`{"error": ...}`. Anything else goes on to FastAPI untouched; the routes
still document these paths in OpenAPI and answer them when the fast path is
off (`Settings.predict_fast_path`). Anything unexpected propagates to the
app's server-error middleware and becomes the usual logged 500.
"""

from __future__ import annotations

import re

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.asgi import JSON_CONTENT_TYPE, read_body, route_path
from app.api.protocols import tfserving, v2
from training.errors import StockcastError

# The route paths as Starlette matches them ({name} is [^/]+, greedy).
V2_INFER = re.compile(r"/v2/models/(?P<name>[^/]+?)(?:/versions/(?P<version>[^/]+))?/infer")
TF_PREDICT = re.compile(
    r"/v1/models/(?P<name>[^/]+?)(?:/versions/(?P<version>[^/]+)|/labels/(?P<label>[^/]+))?:predict"
)
_PREFIXES = ("/v2/models/", "/v1/models/")
_HEADER_LENGTH = v2.HEADER_LENGTH.lower().encode("latin-1")
_BINARY = (b"content-type", b"application/octet-stream")


class ProtocolFastPath:
    """ASGI middleware: answers V2 infer and TF Serving :predict itself, passes everything else on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = route_path(scope) if scope["type"] == "http" and scope["method"] == "POST" else ""
        match = (V2_INFER.fullmatch(path) or TF_PREDICT.fullmatch(path)) if path.startswith(_PREFIXES) else None
        if match is None:
            await self.app(scope, receive, send)
            return
        raw = await read_body(receive)
        if raw is None:
            return  # The client went away before sending its whole body: nobody to answer.
        state = scope["app"].state
        groups = match.groupdict()
        try:
            if match.re is V2_INFER:
                header_length = next((value for key, value in scope["headers"] if key == _HEADER_LENGTH), None)
                answer, length = await v2.infer(
                    state.registry,
                    groups["name"],
                    groups["version"],
                    raw,
                    header_length.decode("latin-1") if header_length is not None else None,
                    state.settings.max_batch_windows,
                )
            else:
                length = None
                answer = await tfserving.predict(
                    state.registry,
                    groups["name"],
                    raw,
                    state.settings.max_batch_windows,
                    version_text=groups["version"],
                    label=groups["label"],
                )
        except StockcastError as error:
            await JSONResponse(status_code=error.status_code, content={"error": str(error)})(scope, receive, send)
            return
        # The headers `v2.infer_response` (Starlette's Response) sends, without building one per request.
        headers = [(b"content-length", str(len(answer)).encode("latin-1"))]
        if length is None:
            headers.append(JSON_CONTENT_TYPE)
        else:
            headers += [_BINARY, (_HEADER_LENGTH, str(length).encode("latin-1"))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})
