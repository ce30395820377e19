"""Who may call what: the scope each request needs, the key that grants it, and the rate of changes per key.

Scopes are decided from the method and path before routing, so the gateway
checks them in front of everything and a route added later is protected by
default: anything that is not a read or an inference call needs `admin`.
- open (no key): `/health`, `/ready`, the OpenAPI document and its pages;
  `/metrics` as `Settings.metrics_scope` says;
- `predict`: reads (GET, HEAD) and inference calls (/predict, /predict/batch,
  the KServe V2 and TF Serving inference paths);
- `admin`: everything else. See docs/design.md, "Security".
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Iterable
from typing import Any, Literal

from app.core.errors import RetryLaterError
from app.core.keys import ADMIN, PREDICT, KeyRing
from training.errors import StockcastError

ANONYMOUS = "anonymous"
# The KServe V2 health paths too: orchestrators of that protocol probe them.
OPEN_PATHS = frozenset(
    {
        "/health",
        "/ready",
        "/v2/health/live",
        "/v2/health/ready",
        "/docs",
        "/docs/oauth2-redirect",
        "/redoc",
        "/openapi.json",
    }
)
METRICS_PATH = "/metrics"
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
INFERENCE_PATHS = re.compile(
    r"/predict(/batch)?"
    r"|/v2/models/[^/]+(/versions/[^/]+)?/infer"
    r"|/v1/models/[^/]+(/versions/[^/]+|/labels/[^/]+)?:(predict|classify|regress)"
)
CHALLENGE = 'Bearer realm="stockcast"'
# Who may call a service that has never had keys: nobody; callers on this machine (connected on a
# loopback address, naming a local host); or everyone (STOCKCAST_ALLOW_ANONYMOUS).
Anonymous = Literal["off", "local", "everywhere"]


class UnauthenticatedError(StockcastError):
    """No key, a malformed Authorization header, or a key that is not in the keys file."""

    status_code = 401

    def __init__(self, message: str, invalid: bool = False) -> None:
        super().__init__(message)
        # RFC 6750: the challenge names the error when a key was sent and refused.
        self.headers = {"WWW-Authenticate": CHALLENGE + (', error="invalid_token"' if invalid else "")}


class ForbiddenError(StockcastError):
    """A valid key without the scope the request needs, or a request from a foreign web origin."""

    status_code = 403


class RateLimitedError(RetryLaterError):
    """Too many changes from one key; `Retry-After` says when to come back."""


class MisdirectedError(StockcastError):
    """A keyless request addressed to a name that is not this machine's: a DNS-rebinding page, or a proxy mix-up."""

    status_code = 421


def required_scope(method: str, path: str, metrics_scope: str) -> str | None:
    """The scope a request needs, or None if it is open to anyone."""
    if path in OPEN_PATHS:
        return None
    if path == METRICS_PATH:
        return None if metrics_scope == "open" else metrics_scope
    if method in READ_METHODS or INFERENCE_PATHS.fullmatch(path):
        return PREDICT
    return ADMIN


def is_loopback(host: str) -> bool:
    """Whether binding to `host` keeps the service reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_local_connection(server: Any) -> bool:
    """Whether a request arrived on an address only this machine reaches, from the ASGI scope's `server`.

    A loopback IP is local; so is a server entry that is no IP address (a
    Unix socket's path, an in-process test client); any other IP is an
    interface other machines may reach, whatever the settings say was bound.
    """
    if not server:
        return True
    try:
        return ipaddress.ip_address(str(server[0]).partition("%")[0]).is_loopback
    except ValueError:
        return True


def host_name(host: bytes) -> str:
    """The name in a Host header, without its port: `localhost`, `127.0.0.1`, `::1`."""
    text = host.decode("latin-1").strip().lower()
    if text.startswith("["):
        return text[1 : text.find("]")] if "]" in text else text
    return text.rpartition(":")[0] if text.count(":") == 1 else text


class Authenticator:
    """Checks a request's bearer key against the keys file."""

    def __init__(self, ring: KeyRing, anonymous: Anonymous, allowed_hosts: Iterable[str] = ()) -> None:
        self.ring = ring
        # While the service has never had keys: who may call it without one (see `Anonymous`).
        self.anonymous = anonymous
        # Names besides loopback ones that a keyless local service answers to (Host header).
        self.allowed_hosts = frozenset(name.lower() for name in allowed_hosts)
        # (server address, Host) pairs already admitted: clients send the same few, and parsing an
        # address on every request would cost the hot path. Bounded; cleared when full.
        self._admitted: set[tuple[Any, bytes | None]] = set()

    def check(
        self,
        authorization: bytes | None,
        required: str,
        method: str,
        path: str,
        server: Any = None,
        host: bytes | None = None,
    ) -> str:
        """The name of the key that may make this request, or ANONYMOUS when no keys exist and that is allowed."""
        keys = self.ring.current()
        if not keys:
            if self.anonymous != "off" and not self.ring.had_keys:
                return self._anonymous(server, host)
            if self.ring.had_keys:
                # Fails closed: revoking the last key shuts the service, it does not open it.
                raise UnauthenticatedError(
                    "every API key of this service is revoked; create one with "
                    "`python -m app keys create NAME --scope admin`"
                )
            raise UnauthenticatedError(
                "this service has no API keys and anonymous access is off; "
                "create one with `python -m app keys create NAME --scope admin`"
            )
        if authorization is None:
            raise UnauthenticatedError("missing API key: send the header 'Authorization: Bearer <key>'")
        # On the header's bytes: a key is ASCII, so a token that is not can only fail to match.
        scheme, _, token = authorization.partition(b" ")
        token = token.strip()
        if scheme.lower() != b"bearer" or not token:
            raise UnauthenticatedError("malformed Authorization header: expected 'Bearer <key>'", invalid=True)
        key = self.ring.find(token)
        if key is None:
            raise UnauthenticatedError("invalid API key (unknown or revoked)", invalid=True)
        if required not in key.grants:
            raise ForbiddenError(
                f"the key '{key.name}' has scope '{key.scope}'; {method} {path} needs a key with scope '{required}'"
            )
        return key.name

    def _anonymous(self, server: Any, host: bytes | None) -> str:
        """ANONYMOUS, if a keyless request came in on a local address and names a local host."""
        # ASGI servers give the address as a tuple, test clients as a list.
        admitted = (tuple(server) if server else None, host)
        if self.anonymous == "everywhere" or admitted in self._admitted:
            return ANONYMOUS
        if not is_local_connection(server):
            raise UnauthenticatedError(
                f"this service has no API keys and this request reached it on {server[0]}, an address other"
                " machines can reach; create a key with `python -m app keys create NAME --scope admin`,"
                " or bind to 127.0.0.1"
            )
        if host is not None:
            name = host_name(host)
            if name != "localhost" and name not in self.allowed_hosts and not _loopback_ip(name):
                raise MisdirectedError(
                    f"Host '{name}' is not this service's name: without API keys it answers only requests"
                    " addressed to localhost or a loopback address (or a name in STOCKCAST_ALLOWED_HOSTS)"
                )
        if len(self._admitted) >= 256:
            self._admitted.clear()
        self._admitted.add(admitted)
        return ANONYMOUS


def _loopback_ip(name: str) -> bool:
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class RateLimiter:
    """A token bucket per caller: `per_minute` requests a minute, in bursts of up to `per_minute`."""

    def __init__(self, per_minute: int) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, caller: str, now: float | None = None) -> None:
        """Spend one token of `caller`'s bucket, or raise RateLimitedError saying when one is free."""
        now = time.monotonic() if now is None else now
        tokens, updated = self._buckets.get(caller, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - updated) * self.rate)
        if tokens < 1.0:
            self._buckets[caller] = (tokens, now)
            wait = (1.0 - tokens) / self.rate
            raise RateLimitedError(
                f"rate limit: at most {int(self.capacity)} changes a minute per key; see Retry-After", wait
            )
        self._buckets[caller] = (tokens - 1.0, now)


def add_security_scheme(schema: dict[str, Any], metrics_scope: str) -> dict[str, Any]:
    """Declare the bearer key in OpenAPI (so /docs can send one) and mark each operation with the scope it needs."""
    schema.setdefault("components", {})["securitySchemes"] = {
        "apiKey": {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key from `python -m app keys create NAME --scope predict|admin`.",
        }
    }
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            scope = required_scope(method.upper(), path, metrics_scope)
            operation["security"] = [] if scope is None else [{"apiKey": []}]
            if scope is None:
                continue
            operation["description"] = (
                operation.get("description", "") + f"\n\nNeeds a key with scope `{scope}`."
            ).strip()
            responses = operation.setdefault("responses", {})
            error_schema = "ProtocolErrorPublic" if path.startswith(("/v1/", "/v2")) else "ErrorPublic"
            responses.setdefault(
                "401", _error("No API key, or one that is unknown or revoked (see WWW-Authenticate).", error_schema)
            )
            if scope == ADMIN:
                responses.setdefault(
                    "403",
                    _error("The key lacks the `admin` scope, or the request came from a foreign Origin.", error_schema),
                )
                responses.setdefault(
                    "429", _error("The key's rate limit on changes; Retry-After says when to retry.", error_schema)
                )
    return schema


def _error(description: str, schema: str) -> dict[str, Any]:
    """An OpenAPI response answered with an error schema: `{"detail": ...}`, or `{"error": ...}` on the protocols."""
    reference = {"$ref": f"#/components/schemas/{schema}"}
    return {"description": description, "content": {"application/json": {"schema": reference}}}
