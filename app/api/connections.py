"""Limits on a connection before any request reaches the app: header size, header and body read times.

uvicorn bounds none of these for its httptools parser: a client could send
headers without end, or a byte a minute, and hold memory and a connection
for as long as it liked, before the gateway could check a key. This
protocol class is uvicorn's own with three checks added: headers larger than
`max_header_bytes` get 431; headers not complete `header_timeout` seconds
after a request began get 408; a body that is still arriving
`body_timeout` seconds after its headers closes the connection (the app sees
the client gone). uvicorn's `limit_concurrency` bounds connections and tasks.
See docs/design.md, "Connection limits".
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from app.core.config import Settings


@dataclass(frozen=True)
class ConnectionLimits:
    """What one connection may take before its request reaches the app."""

    max_header_bytes: int
    header_timeout: float
    body_timeout: float


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of `ConnectionLimits` (see the module docstring)."""

    limits = ConnectionLimits(max_header_bytes=16 * 1024, header_timeout=10.0, body_timeout=60.0)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reading_headers = True
        self._header_bytes = 0
        self._refused = False
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the header clock as soon as the client connects: the first request's headers are due."""
        super().connection_made(transport)
        self._start_timer(self.limits.header_timeout, self._headers_late)

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the clock with the connection."""
        self._cancel_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Feed the parser, counting what arrives while the headers are read."""
        if self._refused:
            return
        if self._reading_headers:
            self._header_bytes += len(data)
        super().data_received(data)
        # Still in the headers after this chunk, and past the limit: the headers alone are too large.
        if self._reading_headers and self._header_bytes > self.limits.max_header_bytes and not self._refused:
            self._refuse(431, f"request headers are larger than the {self.limits.max_header_bytes} byte limit")

    def on_message_begin(self) -> None:
        """A new request: its headers are due within the header timeout."""
        super().on_message_begin()
        self._reading_headers = True
        if self._timer is None:
            self._start_timer(self.limits.header_timeout, self._headers_late)

    def on_headers_complete(self) -> None:
        """Headers in: refuse them if too large (they may have come in one chunk with the body), else read the body."""
        self._reading_headers = False
        self._header_bytes = 0
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.limits.max_header_bytes:
            self._refuse(431, f"request headers are larger than the {self.limits.max_header_bytes} byte limit")
            return
        self._start_timer(self.limits.body_timeout, self._body_late)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        """Body bytes, unless the request was refused."""
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        """The whole request is in: no clock runs until the next one begins."""
        self._cancel_timer()
        self._reading_headers = True
        if not self._refused:
            super().on_message_complete()

    def _headers_late(self) -> None:
        self._timer = None
        if self._reading_headers and not self._refused:
            self._refuse(408, f"request headers did not arrive within {self.limits.header_timeout:g} seconds")

    def _body_late(self) -> None:
        # The app is already reading the body: closing tells it the client is gone; no answer can follow.
        self._timer = None
        self.logger.warning("closing a connection whose request body took over %g seconds", self.limits.body_timeout)
        self.transport.close()

    def _refuse(self, status: int, message: str) -> None:
        """Answer `status` with `{"detail": message}` and close, before the app sees the request."""
        self._refused = True
        self._cancel_timer()
        self.logger.warning("refused a connection: %s", message)
        body = orjson.dumps({"detail": message})
        self.transport.write(
            b"".join(
                [
                    STATUS_LINE[status],
                    b"content-type: application/json\r\n",
                    b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                    b"connection: close\r\n\r\n",
                    body,
                ]
            )
        )
        self.transport.close()

    def _start_timer(self, seconds: float, callback: Any) -> None:
        self._cancel_timer()
        self._timer = self.loop.call_later(seconds, callback)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def connection_limits(settings: Settings) -> ConnectionLimits:
    """The limits the settings give."""
    return ConnectionLimits(
        max_header_bytes=settings.max_header_bytes,
        header_timeout=settings.header_timeout_seconds,
        body_timeout=settings.body_timeout_seconds,
    )


def guarded_protocol(limits: ConnectionLimits) -> type[GuardedHttpToolsProtocol]:
    """The protocol class to give uvicorn (`http=`), bound to `limits`."""
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), {"limits": limits})


__all__ = ["ConnectionLimits", "GuardedHttpToolsProtocol", "connection_limits", "guarded_protocol"]
