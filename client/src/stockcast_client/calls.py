"""One call to the service, its retries and its deadline, written once for both clients and doing no I/O itself.

A call is a generator (a flow) that yields `Attempt` (send this request,
with this timeout) and `Sleep` instructions and receives what came back;
`Client` runs flows with blocking I/O, `AsyncClient` with awaits. What is
retried: any call whose request never left (connection refused) or that
the service refused with 429; after a failure that may have reached the
service (a broken connection, a timeout, 502-504), only a call the service
makes idempotent (`Call.idempotent`) or one that can first read whether
it took effect (`Call.reconcile`). See README.md, "Retries".
"""

from __future__ import annotations

import email.utils
import enum
import json
import random
import time
import uuid
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from stockcast_client.errors import (
    ApiError,
    ConnectionFailedError,
    DeadlineExceededError,
    StockcastClientError,
    error_class,
)
from stockcast_client.options import Options
from stockcast_client.results import ModelInfo

T = TypeVar("T")
USER_AGENT = "stockcast-client/0.1.0"
# Answers that may come after the service (or a proxy in front of it) acted on the request.
MAYBE_APPLIED_STATUSES = frozenset({502, 503, 504})


@dataclass(frozen=True)
class Request:
    """What a driver sends: everything httpx needs for one attempt."""

    method: str
    url: str
    headers: dict[str, str]
    content: bytes | None = None
    data: dict[str, str] | None = None
    files: dict[str, tuple[str, bytes, str]] | None = None
    params: dict[str, str] | None = None


@dataclass(frozen=True)
class Attempt:
    """Instruction: send `request` once and wait at most `timeout` seconds; the flow receives an Answer or NoAnswer."""

    request: Request
    timeout: float


@dataclass(frozen=True)
class Sleep:
    """Instruction: wait `seconds`; the flow receives None."""

    seconds: float


@dataclass(frozen=True)
class Answer:
    """An HTTP answer, whatever its status; header names in lower case."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    request_id: str

    def json(self) -> Any:
        """The body decoded as JSON."""
        return json.loads(self.body)


@dataclass(frozen=True)
class NoAnswer:
    """An attempt that got no answer; `sent` is False when no byte of the request left."""

    reason: str
    sent: bool


Instruction = Attempt | Sleep
Flow = Generator[Instruction, Answer | NoAnswer | None, T]


class Verdict(enum.Enum):
    """What a reconcile read found, besides the result itself."""

    RESEND = "resend"
    """The call certainly did not take effect: send it again."""
    GIVE_UP = "give_up"
    """It cannot be told whether it took effect: raise the failure rather than risk a second effect."""


@dataclass(frozen=True)
class Settled(Generic[T]):
    """A reconcile read found that the call took effect; `value` is what the call returns."""

    value: T


class Deadline:
    """The end of a call's time, every attempt and wait included."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        """Seconds left; zero or less once it has passed."""
        return self.end - time.monotonic()


Reconcile = Callable[[Deadline], Flow[Settled[T] | Verdict]]


@dataclass(frozen=True)
class Call(Generic[T]):
    """One API call: its request, how its answer is read, and whether it may be sent again."""

    method: str
    path: str
    parse: Callable[[Answer], T]
    json: Any = None
    data: dict[str, str] | None = None
    files: dict[str, tuple[str, bytes, str]] | None = None
    params: dict[str, str] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    idempotent: bool = False
    """Whether sending it twice has the effect of sending it once (reads, forecasts, keyed train, appends)."""
    reconcile: Reconcile[T] | None = None
    """For a call that is not idempotent: a read that tells, after a failure that may have reached the
    service, whether it took effect (Settled), certainly did not (RESEND) or cannot be told (GIVE_UP)."""


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds from now: a number of seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_of(call: Call[Any], request: Request, reply: Answer | NoAnswer, request_id: str) -> StockcastClientError:
    """The typed error for a failed attempt."""
    if isinstance(reply, NoAnswer):
        return ConnectionFailedError(
            f"{call.method} {request.url}: {reply.reason}",
            sent=reply.sent,
            method=call.method,
            path=call.path,
            request_id=request_id,
        )
    detail, errors = _detail(reply)
    return error_class(reply.status)(
        detail,
        status=reply.status,
        method=call.method,
        path=call.path,
        request_id=reply.request_id,
        errors=errors,
        retry_after=retry_after_seconds(reply.headers.get("retry-after")),
    )


def _detail(answer: Answer) -> tuple[str, list[dict[str, Any]]]:
    """The service's `detail` (its own routes) or `error` (the standard protocols), else the body's text."""
    try:
        body = answer.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        for key in ("detail", "error"):
            if isinstance(body.get(key), str):
                errors = body.get("errors")
                return body[key], errors if isinstance(errors, list) else []
    text = answer.body.decode("utf-8", "replace").strip()
    return (text[:500] or f"HTTP {answer.status} without a body"), []


def may_retry(call: Call[Any], error: StockcastClientError) -> bool:
    """Whether another attempt is safe: the first cannot have acted, or acting twice is the same as once."""
    if isinstance(error, ConnectionFailedError) and not error.sent:
        return True
    if isinstance(error, ApiError) and error.status == 429:
        # Every 429 of the service (change rate, queued jobs, pinned loads) is a refusal before anything is done.
        return True
    return maybe_applied(error) and (call.idempotent or call.reconcile is not None)


def maybe_applied(error: StockcastClientError) -> bool:
    """Whether the failed attempt may have reached the service and taken effect."""
    if isinstance(error, ConnectionFailedError):
        return error.sent
    return isinstance(error, ApiError) and error.status in MAYBE_APPLIED_STATUSES


class ClientState:
    """What both clients share between calls: where and who, the options, described models and the batch limit."""

    def __init__(self, base_url: str, api_key: str | None, options: Options) -> None:
        self.base_url = base_url
        self.api_key = api_key
        self.options = options
        self.batch_limit = options.max_batch_windows
        self.random = random.Random()
        self._models: dict[str, tuple[float, ModelInfo]] = {}

    def request(self, call: Call[Any], request_id: str) -> Request:
        """The HTTP request of a call."""
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json", "X-Request-ID": request_id}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        content = None
        if call.json is not None:
            headers["Content-Type"] = "application/json"
            content = json.dumps(call.json, separators=(",", ":"), allow_nan=False).encode()
        headers.update(call.headers)
        return Request(call.method, self.base_url + call.path, headers, content, call.data, call.files, call.params)

    def delay(self, attempt: int, error: StockcastClientError) -> float:
        """Seconds to wait before attempt `attempt + 1`: the service's Retry-After, else exponential backoff.

        Both get jitter so that clients refused together do not come back together.
        """
        retry_after = error.retry_after if isinstance(error, ApiError) else None
        if retry_after is not None:
            return retry_after + self.random.uniform(0, self.options.backoff_seconds)
        cap = min(self.options.max_backoff_seconds, self.options.backoff_seconds * 2.0 ** (attempt - 1))
        return cap / 2 + self.random.uniform(0, cap / 2)

    def cached_model(self, name: str, any_age: bool = False) -> ModelInfo | None:
        """A model's description read within `model_cache_seconds` (any time, with `any_age`), else None."""
        found = self._models.get(name)
        if found is None:
            return None
        read_at, info = found
        fresh = time.monotonic() - read_at <= self.options.model_cache_seconds
        return info if fresh or any_age else None

    def remember(self, info: ModelInfo) -> None:
        """Keep a model's description for later windows."""
        self._models[info.name] = (time.monotonic(), info)

    def forget(self, name: str) -> None:
        """Drop a model's description (its aliases or versions changed)."""
        self._models.pop(name, None)


def send(state: ClientState, call: Call[T], deadline: Deadline) -> Flow[T]:
    """Send a call, retrying what is safe to retry within the deadline; its parsed answer, or the typed error."""
    request_id = uuid.uuid4().hex
    request = state.request(call, request_id)
    last_error: StockcastClientError | None = None
    attempt = 0
    while True:
        attempt += 1
        remaining = deadline.remaining()
        if remaining <= 0:
            raise _deadline_error(call, deadline, last_error)
        reply = yield Attempt(request, min(state.options.timeout, remaining))
        assert reply is not None
        if isinstance(reply, Answer) and reply.status < 400:
            return call.parse(reply)
        error = error_of(call, request, reply, request_id)
        last_error = error
        if not may_retry(call, error) or attempt >= state.options.max_attempts:
            raise error
        wait = state.delay(attempt, error)
        if wait >= deadline.remaining():
            raise _deadline_error(call, deadline, error, f"the next attempt would start after it (in {wait:.1f} s)")
        yield Sleep(wait)
        if call.reconcile is not None and maybe_applied(error):
            verdict = yield from call.reconcile(deadline)
            if isinstance(verdict, Settled):
                return verdict.value
            if verdict is Verdict.GIVE_UP:
                raise error


def _deadline_error(
    call: Call[Any], deadline: Deadline, last_error: StockcastClientError | None, why: str = ""
) -> DeadlineExceededError:
    message = f"{call.method} {call.path}: no answer within the deadline of {deadline.seconds:g} s"
    if why:
        message += f"; {why}"
    if last_error is not None:
        message += f"; last failure: {last_error}"
    return DeadlineExceededError(message, last_error=last_error, method=call.method, path=call.path)


__all__ = [
    "Answer",
    "Attempt",
    "Call",
    "ClientState",
    "Deadline",
    "Flow",
    "NoAnswer",
    "Request",
    "Settled",
    "Sleep",
    "Verdict",
    "may_retry",
    "maybe_applied",
    "retry_after_seconds",
    "send",
]
