"""What the fast paths in front of FastAPI's routing share.

`app.api.predict_fast_path` and `app.api.protocols.fast_path` read the
request the same way FastAPI would: its path without the proxy's root, its body whole.
`JsonAnswer` is how /predict answers, through the fast path or the route.
"""

from __future__ import annotations

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

JSON_CONTENT_TYPE = (b"content-type", b"application/json")


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
    """A 200 answer of JSON already encoded, sent as two ASGI messages.

    Starlette's `Response` builds and re-encodes its header list and checks
    for background tasks and extensions on every answer; for /predict's
    answer, the hottest there is, the two headers are known (`bench/serve.py`).
    """

    media_type = "application/json"

    def __init__(self, body: bytes) -> None:  # Response.__init__ is what this class skips.
        self.status_code = 200
        self.body = body
        self.background = None
        self.raw_headers = [(b"content-length", str(len(body)).encode("latin-1")), JSON_CONTENT_TYPE]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.body})
