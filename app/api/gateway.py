"""The outermost middleware: request id, key check, limits, metrics and access log for every request.

One ASGI layer in front of everything, the /predict fast path included, so
no request reaches a route (or the fast path) without passing the same
checks, in this order:

1. a request id: the caller's `X-Request-ID` if it is sane (1-128 of
   letters, digits and `-_.:`), else a new one; set for the log lines
   written while answering (`app/core/logging.py`) and sent back as a
   response header;
2. the key (`app/api/auth.py`): 401 without a valid one, 403 without the
   scope the route needs;
3. a mutating request from a foreign web `Origin` is refused (403): a
   multipart upload is a "simple" request that a browser sends from any page
   without asking first;
4. the per-key rate limit on mutating requests (429 with `Retry-After`);
5. the body size: a declared `Content-Length` over the limit is refused
   before a byte is read (413), and a body without one is counted as it
   arrives.

Then POST /predict, the hottest request, is answered here (`direct`,
`app.api.predict_fast_path`); everything else goes on to the app.

Why one pure ASGI class and not Starlette's `BaseHTTPMiddleware`: that
wrapper runs the app in a separate task with memory streams and costs tens of
microseconds a request; this costs a few (`bench/serve.py` measures the
service with keys and metrics on and off in one run).
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NamedTuple

from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.asgi import read_body, route_path
from app.api.auth import (
    ANONYMOUS,
    READ_METHODS,
    Authenticator,
    ForbiddenError,
    RateLimitedError,
    RateLimiter,
    UnauthenticatedError,
    is_loopback,
    required_scope,
)
from app.core import metrics
from app.core.config import Settings
from app.core.errors import INTERNAL_ERROR, error_response
from app.core.keys import ADMIN, KeyRing
from app.core.logging import REQUEST_ID, install_request_ids
from training.errors import StockcastError

access_logger = logging.getLogger("stockcast.access")
error_logger = logging.getLogger("stockcast.errors")

REQUEST_ID_PATTERN = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
_WANTED = frozenset({b"authorization", b"x-request-id", b"content-length", b"origin", b"host"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# The multipart envelope around an uploaded CSV: boundaries, part headers and the other form fields.
MULTIPART_ALLOWANCE_BYTES = 1024 * 1024
_UPLOAD_PATH = "/datasets"
UNMATCHED = "unmatched"
# Paths of the standard protocols (KServe V2, TensorFlow Serving REST), whose errors read `{"error": ...}`.
PROTOCOL_PREFIXES = ("/v1/", "/v2")
CLIENT_CLOSED = 499


class BodyTooLargeError(StockcastError):
    """A request body over the size limit."""

    status_code = 413


_REJECTIONS: dict[type[StockcastError], str] = {
    UnauthenticatedError: "unauthenticated",
    ForbiddenError: "forbidden",
    RateLimitedError: "rate_limited",
    BodyTooLargeError: "too_large",
}


# Request ids: a random prefix per process, then a counter. Unique across
# replicas and restarts for any practical purpose, and costs no system call
# per request (os.urandom did, on every request).
_ID_PREFIX = os.urandom(4).hex()
_ID_COUNTER = itertools.count()
# Facts about a (method, path) pair kept at most this many; a client sending
# ever new paths only empties the cache, it cannot grow it.
_MAX_ROUTE_FACTS = 512
# Answers the gateway gives itself to a POST on a path, from the request and its whole body (the /predict fast path).
DirectAnswer = Callable[[Scope, bytes], Awaitable[Response]]


def new_request_id() -> str:
    """16 hex digits (8 for this process, 8 counting its requests): enough to find a request's lines in the logs."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER) & 0xFFFFFFFF:08x}"


class RouteFacts(NamedTuple):
    """What the gateway needs to know about a method and path, worked out once per pair."""

    scope: str | None
    """The key scope the request needs (None: open to anyone)."""
    body_limit: int
    """Bytes its body may have."""


class Gateway:
    """ASGI middleware; see the module docstring."""

    def __init__(self, app: ASGIApp, settings: Settings, direct: Mapping[str, DirectAnswer] | None = None) -> None:
        self.app = app
        self.settings = settings
        # POST paths answered here once admitted, without crossing the layers inside (`app.api.predict_fast_path`).
        self.direct = dict(direct or {})
        self.authenticator = Authenticator(
            KeyRing(settings.keys_file), anonymous_allowed=settings.allow_anonymous or is_loopback(settings.host)
        )
        self.limiter = RateLimiter(settings.mutations_per_minute)
        self.metrics = settings.metrics
        self.access_log = settings.access_log
        self.allowed_origins = frozenset(settings.cors_origins)
        self._templates: list[tuple[str, re.Pattern[str]]] | None = None
        self._plain_paths: frozenset[str] = frozenset()
        self._route_facts: dict[tuple[str, str], RouteFacts] = {}
        install_request_ids()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Only metrics and the access log need the clock and the route template: no request pays for them otherwise.
        timed = self.metrics or self.access_log
        started = time.perf_counter() if timed else 0.0
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            if name in _WANTED:
                headers[name] = value
        sent_id = headers.get(b"x-request-id")
        if sent_id is not None and REQUEST_ID_PATTERN.fullmatch(sent_id):
            request_id = sent_id.decode("latin-1")
        else:
            request_id = new_request_id()
            sent_id = request_id.encode("latin-1")
        token = REQUEST_ID.set(request_id)
        id_header = (b"x-request-id", sent_id)
        # Stays 499 (nginx's "client closed request") if the client leaves before an answer starts.
        status = CLIENT_CLOSED
        responded = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, responded
            if message["type"] == "http.response.start":
                status = message["status"]
                responded = True
                message = {**message, "headers": [*message.get("headers", ()), id_header]}
            await send(message)

        method: str = scope["method"]
        path = route_path(scope)
        key_name = "-"
        if self.metrics:
            metrics.LOOP.in_flight += 1
        try:
            try:
                facts = self._facts(method, path)
                if facts.scope is not None:
                    key_name = self._admit(scope, method, path, headers, facts.scope, facts.body_limit)
                # Routes read it as `request.state.key_name` to record who made a change.
                scope.setdefault("state", {})["key_name"] = key_name
                if b"content-length" not in headers and method in _BODY_METHODS:
                    receive = self._bounded(receive, path, facts.body_limit)
                direct = self.direct.get(path) if method == "POST" else None
                if direct is not None:
                    raw = await read_body(receive)
                    # None: the client went away before sending its whole body, so nobody is there to answer.
                    response = await direct(scope, raw) if raw is not None else None
                    if response is not None:
                        # Sent as it is, with the id header added: no wrapper around `send` for the hot request.
                        response.raw_headers.append(id_header)
                        status, responded = response.status_code, True
                        await response(scope, receive, send)
                else:
                    await self.app(scope, receive, send_with_id)
            except StockcastError as error:
                # Refusals from `_admit`, and a body found too large while a route or the fast path read it.
                if responded:
                    raise
                reason = _REJECTIONS.get(type(error))
                if reason is not None and self.metrics:
                    metrics.AUTH_REJECTIONS.labels(reason).inc()
                if path.startswith(PROTOCOL_PREFIXES):
                    # KServe V2 and TF Serving clients read `{"error": ...}`, as the protocol routes answer.
                    headers_out: dict[str, str] | None = getattr(error, "headers", None)
                    answer = JSONResponse(
                        status_code=error.status_code, content={"error": str(error)}, headers=headers_out
                    )
                    await answer(scope, receive, send_with_id)
                else:
                    await error_response(error)(scope, receive, send_with_id)
            except Exception:
                # Answered here rather than by Starlette's outermost handler, so the traceback's log line
                # carries the request id and the answer its header. The body says nothing about the cause.
                if responded:
                    raise
                error_logger.exception("unhandled error on %s %s", method, self._template(scope, path))
                await JSONResponse(status_code=500, content={"detail": INTERNAL_ERROR})(scope, receive, send_with_id)
        finally:
            if timed:
                self._record(scope, method, path, status, time.perf_counter() - started, key_name)
            REQUEST_ID.reset(token)

    def _record(self, scope: Scope, method: str, path: str, status: int, seconds: float, key_name: str) -> None:
        """Count the answered request and write its access log line (whichever of the two is on)."""
        route = self._template(scope, path)
        if self.metrics:
            metrics.LOOP.in_flight -= 1
            metrics.LOOP.observe_request(method, route, status, seconds)
        if self.access_log and access_logger.isEnabledFor(logging.INFO):
            access_logger.info(
                "%s %s %d %.1f ms key=%s",
                method,
                route,
                status,
                seconds * 1000,
                key_name,
                extra={
                    "method": method,
                    "route": route,
                    "status": status,
                    "duration_ms": round(seconds * 1000, 2),
                    "key": key_name,
                },
            )

    def _facts(self, method: str, path: str) -> RouteFacts:
        """The scope and body limit of `method path`, from a bounded cache (the same few pairs come again and again)."""
        facts = self._route_facts.get((method, path))
        if facts is None:
            facts = RouteFacts(required_scope(method, path, self.settings.metrics_scope), self._body_limit(path))
            if len(self._route_facts) >= _MAX_ROUTE_FACTS:
                self._route_facts.clear()
            self._route_facts[(method, path)] = facts
        return facts

    def _admit(
        self, scope: Scope, method: str, path: str, headers: dict[bytes, bytes], required: str, body_limit: int
    ) -> str:
        """The caller's key name if a request needing scope `required` may go on; raises the refusal otherwise."""
        key_name = self.authenticator.check(headers.get(b"authorization"), required, method, path)
        if method not in READ_METHODS:
            origin = headers.get(b"origin")
            if origin is not None and not self._origin_allowed(origin, headers.get(b"host")):
                raise ForbiddenError(
                    f"cross-origin request refused: Origin {origin.decode('latin-1')!r} may not call {method} {path};"
                    " list it in STOCKCAST_CORS_ORIGINS to allow it"
                )
        if required == ADMIN:
            # Without keys, callers are told apart by address.
            client = scope.get("client") or ("unknown", 0)
            self.limiter.take(key_name if key_name != ANONYMOUS else f"{ANONYMOUS}@{client[0]}")
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > body_limit):
            raise BodyTooLargeError(f"request body is larger than the {body_limit} byte limit for {path}")
        return key_name

    def _origin_allowed(self, origin: bytes, host: bytes | None) -> bool:
        """A browser's Origin is fine if CORS allows it or it is this service's own address."""
        text = origin.decode("latin-1")
        if text in self.allowed_origins:
            return True
        _, _, authority = text.partition("://")
        return host is not None and authority == host.decode("latin-1")

    def _body_limit(self, path: str) -> int:
        """Bytes a request body to `path` may have."""
        if path == _UPLOAD_PATH:
            return self.settings.max_upload_bytes + MULTIPART_ALLOWANCE_BYTES
        return self.settings.max_request_bytes

    def _bounded(self, receive: Receive, path: str, limit: int) -> Receive:
        """`receive`, counting a body whose size was not declared up front (a declared one is checked in `_admit`)."""
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLargeError(f"request body is larger than the {limit} byte limit for {path}")
            return message

        return counted

    def _template(self, scope: Scope, path: str) -> str:
        """The route template a request matched: a bounded label, never the raw path."""
        route: Any = scope.get("route")
        if route is not None:
            return str(getattr(route, "path_format", None) or getattr(route, "path", UNMATCHED))
        # Answered before routing (the fast path, a refusal): match the path against the documented templates.
        if self._templates is None:
            self._templates = _templates_of(scope.get("app"))
            self._plain_paths = frozenset(template for template, _ in self._templates if "{" not in template)
        if path in self._plain_paths:
            return path
        for template, pattern in self._templates:
            if pattern.fullmatch(path):
                return template
        return UNMATCHED


def _templates_of(app: Any) -> list[tuple[str, re.Pattern[str]]]:
    """Every path template in the app's OpenAPI document with a pattern matching its paths, plain paths first."""
    paths = list(app.openapi().get("paths", {})) if hasattr(app, "openapi") else []
    paths.sort(key=lambda template: ("{" in template, template))
    return [(template, re.compile(re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(template)))) for template in paths]


__all__ = ["BodyTooLargeError", "Gateway", "new_request_id"]
