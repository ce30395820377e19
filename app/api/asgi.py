"""What the gateway's direct answers share: the request's path and body, the answer sent as it is.

A direct answer (`app.api.gateway`) reads the request as FastAPI would (its
path without the proxy's root, its body whole) and answers with a body that
is already encoded, sent without Starlette's per-answer header handling.
See docs/design.md, "Serving path".
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

P = ParamSpec("P")
T = TypeVar("T")
JSON_CONTENT_TYPE = (b"content-type", b"application/json")
# Bodies up to this size are parsed on the event loop: a thread hop would cost more than the parse.
PARSE_IN_THREAD_BYTES = 256 * 1024
# Integers and floats, as numpy infers them from JSON numbers ("b" for booleans is refused).
NUMBER_KINDS = frozenset("fi")


async def parsed(raw: bytes, parse: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """`parse(*args)` for a request body `raw`: in a thread when the body is large, so that a
    maximum-size body delays the other requests by thread switches, not by its whole parse."""
    if len(raw) <= PARSE_IN_THREAD_BYTES:
        return parse(*args, **kwargs)
    return await asyncio.to_thread(parse, *args, **kwargs)


def route_path(scope: Scope) -> str:
    """The path as FastAPI's router matches it: without the root path a proxy mounts the app under."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


async def read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None if the client disconnected first."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class JsonAnswer(Response):
    """A 200 answer whose body is already encoded, sent as two ASGI messages with headers known up front.

    JSON unless `content_type` says otherwise; `extra` headers follow it.
    Starlette's `Response` builds and re-encodes its header list and checks
    for background tasks on every answer, which the hot answers skip.
    """

    media_type = "application/json"

    def __init__(
        self,
        body: bytes,
        content_type: tuple[bytes, bytes] = JSON_CONTENT_TYPE,
        extra: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:  # Response.__init__ is what this class skips.
        self.status_code = 200
        self.body = body
        self.background = None
        self.raw_headers = [(b"content-length", str(len(body)).encode("latin-1")), content_type, *extra]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.body})


class AnsweredByGatewayError(RuntimeError):
    """A route that only documents its path was reached: the gateway answers that path before routing.

    Raised by the documentation-only routes (POST /predict, V2 infer, TF
    Serving :predict), whose one answering path is `app.api.gateway.DIRECT_ANSWERS`.
    """
