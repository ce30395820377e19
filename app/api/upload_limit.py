"""The upload size rule: one limit on an upload's whole body, enforced while the body streams in.

An upload's body may hold `max_upload_bytes` of file plus `UPLOAD_ALLOWANCE_BYTES`
for the multipart envelope (`upload_body_limit`). The gateway refuses a
declared Content-Length over it before reading; this middleware counts an
undeclared body as it arrives and cuts it off there, because FastAPI parses
(and Starlette spools to disk) a multipart body before the route runs. The
route then checks the file's own size (`too_large_message`).
See docs/design.md.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UPLOAD_PATH = "/datasets"
# Room for the multipart boundaries, part headers and the small form fields
# around the file: the limit itself is on the file, checked again by the route.
UPLOAD_ALLOWANCE_BYTES = 1024 * 1024


def upload_body_limit(max_upload_bytes: int) -> int:
    """Bytes an upload's whole body may have: the file's limit and the envelope's allowance."""
    return max_upload_bytes + UPLOAD_ALLOWANCE_BYTES


def too_large_message(max_bytes: int) -> str:
    """The 413 detail, the same here and in the route."""
    return f"file is larger than the {max_bytes} byte limit"


class UploadLimit:
    """Answers 413 as soon as an undeclared body POSTed to one of `paths` streams past the upload body limit.

    A declared Content-Length over the limit never gets here: the gateway refuses it first.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, paths: tuple[str, ...] = (UPLOAD_PATH,)) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass other requests through untouched; count the bytes of uploads."""
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        limit = upload_body_limit(self.max_bytes)
        received = 0
        over = False
        started = False

        async def counted_receive() -> Message:
            nonlocal received, over
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # The app sees a client that went away: it stops reading and spools nothing more.
                    over = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if over:
                return  # the app's answer to a cut-off body is replaced by the 413 below
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not over:
                raise
        if over and not started:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = orjson.dumps({"detail": too_large_message(self.max_bytes)})
        headers: list[Any] = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        # The rest of the body is not read: close the connection rather than leave it unread.
        headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
