"""The outermost middleware: request id, key check, limits, metrics and access log, and the direct answers.

Every request passes the same checks, in this order: a request id (the
caller's sane `X-Request-ID` or a new one); the key (`app.api.auth`: 401,
or 403 without the route's scope); a mutating request from a foreign web
`Origin` (403); the per-key rate limit on changes (429); the body size (413:
a declared length before a byte is read, an undeclared one as it arrives).
Then the hot inference routes are answered here, from `DIRECT_ANSWERS`;
everything else goes on to the app. A pure ASGI class, not Starlette's
`BaseHTTPMiddleware`, which runs the app in a separate task. See docs/design.md.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, NamedTuple

from fastapi.exceptions import RequestValidationError
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api import predict
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
from app.api.protocols import tfserving, v2
from app.api.upload_limit import UPLOAD_PATH, upload_body_limit
from app.core import metrics
from app.core.config import Settings
from app.core.errors import INTERNAL_ERROR, error_response, protocol_error_response, validation_error_response
from app.core.keys import ADMIN, KeyRing
from app.core.logging import REQUEST_ID, install_request_ids
from training.errors import StockcastError

access_logger = logging.getLogger("stockcast.access")
error_logger = logging.getLogger("stockcast.errors")

REQUEST_ID_PATTERN = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
_WANTED = frozenset({b"authorization", b"x-request-id", b"content-length", b"origin", b"host"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_UPLOAD = ("POST", UPLOAD_PATH)
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
# replicas and restarts for any practical purpose, and costs no system call per request.
_ID_PREFIX = os.urandom(4).hex()
_ID_COUNTER = itertools.count()
# Facts about a (method, path) pair kept at most this many; a client sending
# ever new paths only empties the cache, it cannot grow it.
_MAX_ROUTE_FACTS = 512
# An answer the gateway gives itself to a POST: from the request, its path's parameters and its whole body.
# Errors propagate, and the gateway renders them (`_error_answer`).
DirectAnswer = Callable[[Scope, Mapping[str, str | None], bytes], Awaitable[Response]]


class DirectRoute(NamedTuple):
    """A POST path the gateway answers itself: the path as a pattern (its groups are the parameters), the answer."""

    pattern: re.Pattern[str]
    answer: DirectAnswer


# The hot inference routes, answered here once admitted, without crossing FastAPI's routing: their one
# answering path. Their FastAPI routes only document them in OpenAPI. The patterns match what
# Starlette's router would match for the documented templates ({name} is [^/]+).
DIRECT_ANSWERS: tuple[DirectRoute, ...] = (
    DirectRoute(re.compile(r"/predict"), predict.answer),
    DirectRoute(re.compile(r"/v2/models/(?P<name>[^/]+?)(?:/versions/(?P<version>[^/]+))?/infer"), v2.answer),
    DirectRoute(
        re.compile(r"/v1/models/(?P<name>[^/]+?)(?:/versions/(?P<version>[^/]+)|/labels/(?P<label>[^/]+))?:predict"),
        tfserving.answer,
    ),
)
_NO_PARAMETERS: Mapping[str, str | None] = {}


def new_request_id() -> str:
    """16 hex digits (8 for this process, 8 counting its requests): enough to find a request's lines in the logs."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER) & 0xFFFFFFFF:08x}"


class RouteFacts(NamedTuple):
    """What the gateway needs to know about a method and path, worked out once per pair."""

    scope: str | None
    """The key scope the request needs (None: open to anyone)."""
    body_limit: int
    """Bytes its body may have."""
    direct: DirectAnswer | None
    """The gateway's own answer to it (`DIRECT_ANSWERS`), if it has one."""
    parameters: Mapping[str, str | None]
    """The path's parameters, for `direct`."""


class Gateway:
    """ASGI middleware; see the module docstring."""

    def __init__(self, app: ASGIApp, settings: Settings, direct: Sequence[DirectRoute] = DIRECT_ANSWERS) -> None:
        self.app = app
        self.settings = settings
        self.direct = tuple(direct)
        self.authenticator = Authenticator(
            KeyRing(settings.keys_file),
            "everywhere" if settings.allow_anonymous else "local" if is_loopback(settings.host) else "off",
            settings.allowed_hosts,
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
                # An upload's undeclared body is counted by `UploadLimit`, under the same limit.
                if b"content-length" not in headers and method in _BODY_METHODS and (method, path) != _UPLOAD:
                    receive = self._bounded(receive, path, facts.body_limit)
                if facts.direct is not None:
                    raw = await read_body(receive)
                    # None: the client went away before sending its whole body, so nobody is there to answer.
                    if raw is not None:
                        response = await facts.direct(scope, facts.parameters, raw)
                        # Sent as it is, with the id header added: no wrapper around `send` for the hot request.
                        response.raw_headers.append(id_header)
                        status, responded = response.status_code, True
                        await response(scope, receive, send)
                else:
                    await self.app(scope, receive, send_with_id)
            except (StockcastError, RequestValidationError) as error:
                # Refusals from `_admit`, a body found too large while it was read, and a direct answer's errors.
                if responded:
                    raise
                reason = _REJECTIONS.get(type(error))  # type: ignore[arg-type]
                if reason is not None and self.metrics:
                    metrics.AUTH_REJECTIONS.labels(reason).inc()
                await _error_answer(error, path)(scope, receive, send_with_id)
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
            direct, parameters = self._direct_answer(path) if method == "POST" else (None, _NO_PARAMETERS)
            facts = RouteFacts(
                required_scope(method, path, self.settings.metrics_scope), self._body_limit(path), direct, parameters
            )
            if len(self._route_facts) >= _MAX_ROUTE_FACTS:
                self._route_facts.clear()
            self._route_facts[(method, path)] = facts
        return facts

    def _admit(
        self, scope: Scope, method: str, path: str, headers: dict[bytes, bytes], required: str, body_limit: int
    ) -> str:
        """The caller's key name if a request needing scope `required` may go on; raises the refusal otherwise."""
        key_name = self.authenticator.check(
            headers.get(b"authorization"), required, method, path, scope.get("server"), headers.get(b"host")
        )
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

    def _direct_answer(self, path: str) -> tuple[DirectAnswer | None, Mapping[str, str | None]]:
        """The gateway's own answer to a POST to `path` and the path's parameters; (None, {}) for the app's."""
        for route in self.direct:
            match = route.pattern.fullmatch(path)
            if match is not None:
                return route.answer, match.groupdict()
        return None, _NO_PARAMETERS

    def _body_limit(self, path: str) -> int:
        """Bytes a request body to `path` may have."""
        if path == UPLOAD_PATH:
            return upload_body_limit(self.settings.max_upload_bytes)
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
        # Answered before routing (a direct answer, a refusal): match the path against the documented templates.
        if self._templates is None:
            self._templates = _templates_of(scope.get("app"))
            self._plain_paths = frozenset(template for template, _ in self._templates if "{" not in template)
        if path in self._plain_paths:
            return path
        for template, pattern in self._templates:
            if pattern.fullmatch(path):
                return template
        return UNMATCHED


def _error_answer(error: StockcastError | RequestValidationError, path: str) -> Response:
    """An error's answer: `{"error": ...}` on the standard protocols' paths, `{"detail": ...}` elsewhere."""
    if path.startswith(PROTOCOL_PREFIXES):
        return protocol_error_response(error)
    if isinstance(error, RequestValidationError):
        return validation_error_response(error)
    return error_response(error)


def _templates_of(app: Any) -> list[tuple[str, re.Pattern[str]]]:
    """Every path template in the app's OpenAPI document with a pattern matching its paths, plain paths first."""
    paths = list(app.openapi().get("paths", {})) if hasattr(app, "openapi") else []
    paths.sort(key=lambda template: ("{" in template, template))
    return [(template, re.compile(re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(template)))) for template in paths]


__all__ = ["DIRECT_ANSWERS", "BodyTooLargeError", "DirectRoute", "Gateway", "new_request_id"]
