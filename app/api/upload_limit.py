"""The upload size limit, enforced while the body streams in, before any byte reaches a file.

FastAPI parses a multipart body before the route runs, and Starlette spools
every file part over 1 MB to a temporary file: the route's own size check
came after the whole upload was on disk (a 300 MB upload wrote about 280 MB
to /tmp before its 413). This middleware counts the bytes as they arrive
and cuts the request off at the limit, so at most the limit (plus the form's
headers) is ever spooled; the spool itself goes to the data folder (see
`app.main`).
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Room for the multipart boundaries, part headers and the small form fields
# around the file: the limit itself is on the file, checked again by the route.
FORM_ALLOWANCE = 64 * 1024


def too_large_message(max_bytes: int) -> str:
    """The 413 detail, the same here and in the route."""
    return f"file is larger than the {max_bytes} byte limit"


class UploadLimit:
    """Answers 413 as soon as a POST to one of `paths` carries more than the limit (announced or streamed)."""

    def __init__(self, app: ASGIApp, max_bytes: int, paths: tuple[str, ...] = ("/datasets",)) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass other requests through untouched; count the bytes of uploads."""
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes + FORM_ALLOWANCE
        announced = dict(scope["headers"]).get(b"content-length")
        if announced is not None and announced.isdigit() and int(announced) > limit:
            await self._refuse(send)
            return
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
