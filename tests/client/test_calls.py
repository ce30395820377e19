"""The retry rules and the retry loop, driven by hand: replies in, instructions out, no service and no waiting.

`test_retries.py` shows the same rules against the real service; here each rule has one case.
"""

from __future__ import annotations

import email.utils
import re
import time
from typing import Any

import pytest
from stockcast_client import Options
from stockcast_client.calls import (
    Answer,
    Attempt,
    Call,
    ClientState,
    Deadline,
    Flow,
    NoAnswer,
    Settled,
    Sleep,
    Verdict,
    error_of,
    may_retry,
    retry_after_seconds,
    send,
)
from stockcast_client.errors import (
    ApiError,
    ConnectionFailedError,
    DeadlineExceededError,
    NotFoundError,
    RateLimitedError,
    ServerError,
    ServiceUnavailableError,
    StockcastClientError,
    UnprocessableEntityError,
)

PLAIN = Call("POST", "/datasets", parse=lambda answer: answer.status)
IDEMPOTENT = Call("POST", "/predict", parse=lambda answer: answer.status, idempotent=True)


def answer(status: int, body: bytes = b"{}", **headers: str) -> Answer:
    return Answer(status, {name.replace("_", "-"): value for name, value in headers.items()}, body, "sent-id")


def drive(flow: Flow[Any], replies: list[Answer | NoAnswer]) -> tuple[Any, list[Attempt | Sleep]]:
    """Run a flow, answering its attempts with `replies` in order; its result and every instruction it gave."""
    given: list[Attempt | Sleep] = []
    reply: Answer | NoAnswer | None = None
    try:
        while True:
            instruction = flow.send(reply)
            given.append(instruction)
            reply = replies.pop(0) if isinstance(instruction, Attempt) else None
    except StopIteration as stop:
        return stop.value, given


def state(**options: Any) -> ClientState:
    return ClientState("http://service", "key", Options(**options))


def attempts(given: list[Attempt | Sleep]) -> int:
    return sum(isinstance(item, Attempt) for item in given)


REFUSED = NoAnswer("ConnectError: refused", sent=False)
BROKEN = NoAnswer("RemoteProtocolError: disconnected", sent=True)


@pytest.mark.parametrize(
    ("reply", "plain", "idempotent"),
    [
        (REFUSED, True, True),
        (answer(429, retry_after="1"), True, True),
        (BROKEN, False, True),
        (answer(503), False, True),
        (answer(502), False, True),
        (answer(500), False, False),
        (answer(422), False, False),
        (answer(404), False, False),
    ],
)
def test_what_each_failure_allows(reply: Answer | NoAnswer, plain: bool, idempotent: bool) -> None:
    error = error_of(PLAIN, state().request(PLAIN, "id"), reply, "id")

    assert (may_retry(PLAIN, error), may_retry(IDEMPOTENT, error)) == (plain, idempotent)


def test_a_call_that_is_not_idempotent_is_not_sent_again_after_a_failure_that_may_have_reached_the_service() -> None:
    with pytest.raises(ConnectionFailedError) as broken:
        drive(send(state(), PLAIN, Deadline(10)), [BROKEN])
    assert broken.value.sent and broken.value.request_id

    with pytest.raises(ServiceUnavailableError):
        drive(send(state(), PLAIN, Deadline(10)), [answer(503, b'{"detail": "restarting"}')])


def test_an_idempotent_call_is_sent_again_after_waits_that_double() -> None:
    result, given = drive(
        send(state(backoff_seconds=0.2), IDEMPOTENT, Deadline(60)), [BROKEN, answer(503), answer(504), answer(200)]
    )

    assert result == 200 and attempts(given) == 4
    waits = [item.seconds for item in given if isinstance(item, Sleep)]
    for index, wait in enumerate(waits):
        cap = 0.2 * 2**index
        assert cap / 2 <= wait <= cap


def test_retry_after_sets_the_wait_and_a_wait_past_the_deadline_is_not_taken() -> None:
    result, given = drive(send(state(), PLAIN, Deadline(60)), [answer(429, retry_after="3"), answer(200)])
    (wait,) = [item.seconds for item in given if isinstance(item, Sleep)]
    assert result == 200 and 3.0 <= wait <= 3.2

    with pytest.raises(DeadlineExceededError) as late:
        drive(send(state(), IDEMPOTENT, Deadline(2)), [answer(503, retry_after="5")])
    assert isinstance(late.value.last_error, ServiceUnavailableError)
    assert re.search(r"the next attempt would start after it \(in 5\.[0-2] s\)", str(late.value))


def test_attempts_stop_at_max_attempts_with_the_last_error() -> None:
    with pytest.raises(ServiceUnavailableError):
        drive(send(state(max_attempts=2), IDEMPOTENT, Deadline(60)), [answer(503), answer(503)])


def test_each_attempt_waits_no_longer_than_the_deadline_leaves() -> None:
    _, given = drive(send(state(timeout=10.0), IDEMPOTENT, Deadline(0.5)), [answer(200)])

    (attempt,) = given
    assert isinstance(attempt, Attempt) and attempt.timeout <= 0.5


def test_a_reconcile_read_settles_resends_or_gives_up() -> None:
    def reconciled(verdict: Settled[int] | Verdict) -> Call[int]:
        def reconcile(deadline: Deadline) -> Flow[Settled[int] | Verdict]:
            yield from ()
            return verdict

        return Call("PUT", "/models/m/aliases/a", parse=lambda answer: answer.status, reconcile=reconcile)

    settled, given = drive(send(state(), reconciled(Settled(7)), Deadline(60)), [BROKEN])
    assert settled == 7 and attempts(given) == 1
    resent, given = drive(send(state(), reconciled(Verdict.RESEND), Deadline(60)), [BROKEN, answer(200)])
    assert resent == 200 and attempts(given) == 2
    with pytest.raises(ConnectionFailedError):
        drive(send(state(), reconciled(Verdict.GIVE_UP), Deadline(60)), [BROKEN])


@pytest.mark.parametrize(
    ("status", "body", "kind", "detail"),
    [
        (404, b'{"detail": "unknown model \'x\'"}', NotFoundError, "unknown model 'x'"),
        (422, b'{"detail": "window: bad", "errors": [{"loc": ["body"]}]}', UnprocessableEntityError, "window: bad"),
        (429, b'{"detail": "rate limit"}', RateLimitedError, "rate limit"),
        (503, b'{"error": "restarting"}', ServiceUnavailableError, "restarting"),
        (502, b"<html>bad gateway</html>", ServerError, "<html>bad gateway</html>"),
        (418, b"", ApiError, "HTTP 418 without a body"),
    ],
)
def test_errors_are_typed_by_status_and_carry_the_detail(
    status: int, body: bytes, kind: type[StockcastClientError], detail: str
) -> None:
    with pytest.raises(kind) as raised:
        drive(send(state(max_attempts=1), PLAIN, Deadline(60)), [answer(status, body)])

    error = raised.value
    assert isinstance(error, ApiError)
    assert (error.status, error.detail, error.request_id) == (status, detail, "sent-id")
    assert str(error) == f"POST /datasets: {status} {detail}"


def test_retry_after_is_read_as_seconds_or_as_an_http_date() -> None:
    in_ten = email.utils.formatdate(time.time() + 10, usegmt=True)

    assert retry_after_seconds("3") == 3.0
    assert 8.0 <= (retry_after_seconds(in_ten) or 0.0) <= 10.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


def test_requests_carry_the_key_a_request_id_and_compact_json() -> None:
    request = state().request(Call("POST", "/predict", parse=str, json={"model": "m", "window": [[1.0]]}), "rid")

    assert request.url == "http://service/predict"
    assert request.headers["Authorization"] == "Bearer key" and request.headers["X-Request-ID"] == "rid"
    assert request.content == b'{"model":"m","window":[[1.0]]}'


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"deadline": 0}, "deadline must be a positive number of seconds, got 0"),
        ({"on_unavailable": "maybe"}, "on_unavailable must be 'raise' or 'naive', got 'maybe'"),
        ({"max_attempts": 0}, "max_attempts and max_batch_windows must be at least 1"),
    ],
)
def test_options_out_of_bounds_say_which(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as refused:
        Options(**options)
    assert str(refused.value) == message
