"""What the fast paths in front of FastAPI's routing share.

`app.api.predict_fast_path` and `app.api.protocols.fast_path` read the
request the same way FastAPI would: its path without the proxy's root, its body whole.
"""

from __future__ import annotations

from starlette.types import Receive, Scope


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
