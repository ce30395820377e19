"""The gateway's direct answers: the one answering path of POST /predict, V2 infer and TF Serving :predict.

The gateway answers every POST /predict with `app.api.predict.answer`: one
parse of the body, the core's lookup and forecast, and every error rendered
as the app's exception handlers render it. The FastAPI routes of these
paths only document them.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import orjson
import pytest
from fastapi.exceptions import RequestValidationError
from fastapi.testclient import TestClient
from starlette.types import Message, Scope

import app.api.predict as predict
from app.api.gateway import DIRECT_ANSWERS
from app.core.errors import error_response, validation_error_response
from tests.helpers import WINDOW, local_client
from training.errors import StockcastError

COLUMNS = ["open", "high", "low", "close", "volume"]
ROW = [75.0, 76.0, 74.0, 75.5, 1.0e7]


def arrays_body(**selector: Any) -> dict[str, Any]:
    """A valid arrays-form body for the tiny models (columns open, high, low, close, volume)."""
    window = [[value * (1 + 0.001 * day) for value in ROW] for day in range(WINDOW)]
    return {"model": "tiny", "window": window, **selector}


def close_enough(left: Any, right: Any) -> None:
    """Equal JSON, floats within float32 rounding (the two apps may run different compiled graphs)."""
    assert type(left) is type(right), (left, right)
    if isinstance(left, dict):
        assert left.keys() == right.keys()
        for key in left:
            close_enough(left[key], right[key])
    elif isinstance(left, list):
        assert len(left) == len(right)
        for one, other in zip(left, right, strict=True):
            close_enough(one, other)
    elif isinstance(left, float):
        assert left == pytest.approx(right, rel=1e-5)
    else:
        assert left == right


def core_answer(client: TestClient, raw: bytes) -> tuple[int, bytes]:
    """Status and body of what the core gives for `raw`, errors rendered by the app's own exception handlers."""
    registry = client.app.state.registry  # type: ignore[attr-defined]
    try:
        scope = {"app": client.app, "state": {}}
        body, _ = client.portal.call(predict.predict_one, registry, predict.parse_predict(raw), scope)  # type: ignore[union-attr]
        return 200, body
    except StockcastError as error:
        rendered = error_response(error)
    except RequestValidationError as error:
        rendered = validation_error_response(error)
    return rendered.status_code, bytes(rendered.body)


@pytest.fixture
def direct_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the bodies the gateway's /predict answer parses (every request it answers)."""
    calls: list[int] = []
    real = predict.parse_predict

    def counted(raw: bytes) -> Any:
        calls.append(1)
        return real(raw)

    monkeypatch.setattr(predict, "parse_predict", counted)
    return calls


@pytest.mark.parametrize(
    "body",
    [
        arrays_body(),
        arrays_body(version=2),
        arrays_body(alias="champion"),
        {**arrays_body(), "model": "tiny-h5"},
        {
            **arrays_body(),
            "window": [
                {"date": f"2017-10-{day + 2:02d}", **dict(zip(COLUMNS, ROW, strict=True))} for day in range(WINDOW)
            ],
        },
    ],
    ids=["default", "pinned", "alias", "horizon-5", "rows"],
)
def test_the_gateway_answers_every_form_of_window(
    client: TestClient, direct_calls: list[int], body: dict[str, Any]
) -> None:
    fast = client.post("/predict", json=body)
    assert fast.status_code == 200, fast.text
    assert direct_calls == [1], "the gateway answers every form of window"
    status, core = core_answer(client, orjson.dumps(body))
    assert status == 200
    assert fast.headers["content-type"] == "application/json"
    assert int(fast.headers["content-length"]) == len(fast.content)
    close_enough(orjson.loads(fast.content), orjson.loads(core))


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (orjson.dumps({**arrays_body(), "model": "nope"}), 404),
        (orjson.dumps(arrays_body(version=99)), 404),
        (orjson.dumps(arrays_body(alias="nope")), 404),
        (orjson.dumps({**arrays_body(), "window": arrays_body()["window"][:3]}), 422),
        (orjson.dumps({**arrays_body(), "window": [row[:4] for row in arrays_body()["window"]]}), 422),
        (orjson.dumps({**arrays_body(), "window": [[-1.0, *row[1:]] for row in arrays_body()["window"]]}), 422),
        (orjson.dumps({"model": "tiny", "window": [dict(zip(COLUMNS, ROW, strict=True))] * 2}), 422),
        (b'{"model": "tiny", "window": [[1, 2], [3]]}', 422),
        (b'{"model": "tiny", "window": [[NaN, 1, 1, 1, 1]]}', 422),
        (b'{"model": "tiny", "window": [[1, 1, 1, 1, 1]], "extra": 1}', 422),
        (b'{"model": "tiny", "window": [[1, 1, 1, 1, 1]], "version": "1"}', 422),
        (b"not json", 422),
        (b"", 422),
    ],
    ids=[
        "unknown-model",
        "unknown-version",
        "unknown-alias",
        "short-window",
        "missing-column",
        "negative-price",
        "short-rows",
        "ragged",
        "nan",
        "unknown-key",
        "string-version",
        "invalid-json",
        "empty",
    ],
)
def test_errors_are_byte_for_byte_the_app_s_own(
    client: TestClient, direct_calls: list[int], raw: bytes, status: int
) -> None:
    headers = {"content-type": "application/json"}
    fast = client.post("/predict", content=raw, headers=headers)
    assert direct_calls == [1]
    rendered_status, rendered = core_answer(client, raw)
    assert fast.status_code == rendered_status == status, fast.text
    assert fast.content == rendered


def test_a_body_is_parsed_once(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """The arrays parser runs once per request, also when it declines the body (rows go on to pydantic)."""
    calls: list[bytes] = []
    real = predict.parse_array_window

    def counted(raw: bytes) -> Any:
        calls.append(raw)
        return real(raw)

    monkeypatch.setattr(predict, "parse_array_window", counted)
    rows = [dict(zip(COLUMNS, ROW, strict=True))] * WINDOW
    assert client.post("/predict", json={"model": "tiny", "window": rows}).status_code == 200
    assert client.post("/predict", json=arrays_body()).status_code == 200
    assert len(calls) == 2


def test_other_methods_and_paths_go_on_to_fastapi(client: TestClient) -> None:
    expected = {
        ("GET", "/predict"): (405, {"detail": "Method Not Allowed"}),
        ("PUT", "/predict"): (405, {"detail": "Method Not Allowed"}),
    }
    for (method, path), (status, body) in expected.items():
        answer = client.request(method, path, json=arrays_body(), follow_redirects=False)
        assert (answer.status_code, answer.json()) == (status, body), (method, path)
    # FastAPI redirects to the path without the slash, which the gateway then answers.
    redirected = client.post("/predict/", json=arrays_body(), follow_redirects=False)
    assert redirected.status_code == 307 and redirected.headers["location"].endswith("/predict")
    batch = client.post("/predict/batch", json={"model": "tiny", "windows": [arrays_body()["window"]]})
    assert batch.status_code == 200


def test_an_unexpected_error_is_a_logged_500_not_a_crash(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(*args: Any, **kwargs: Any) -> bytes:
        raise RuntimeError("boom")

    monkeypatch.setattr(predict, "predict_one", broken)
    # A second client over the same running app, one that turns server errors into answers.
    lenient = local_client(client.app, raise_server_exceptions=False)
    answer = lenient.post("/predict", json=arrays_body())
    assert answer.status_code == 500
    assert answer.json() == {"detail": "internal error; see the server log"}
    monkeypatch.undo()
    assert client.post("/predict", json=arrays_body()).status_code == 200


def test_the_gateway_and_the_core_agree_over_many_windows(client: TestClient) -> None:
    rng = np.random.default_rng(3)
    for _ in range(5):
        window = (np.array(ROW) * rng.uniform(0.9, 1.1, size=(WINDOW, len(ROW)))).round(2).tolist()
        body = {"model": "tiny", "window": window}
        _, core = core_answer(client, orjson.dumps(body))
        close_enough(client.post("/predict", json=body).json(), orjson.loads(core))


def test_every_documented_hot_inference_path_is_answered_by_the_gateway(client: TestClient) -> None:
    """One answering path per endpoint: the documented POST inference paths are all in the gateway's table."""
    posts = [path for path, operations in client.get("/openapi.json").json()["paths"].items() if "post" in operations]
    hot = [path for path in posts if path == "/predict" or path.endswith(("/infer", ":predict"))]
    assert len(hot) == 6, hot
    for template in hot:
        path = template.replace("{name}", "tiny").replace("{version}", "2").replace("{label}", "champion")
        assert any(route.pattern.fullmatch(path) for route in DIRECT_ANSWERS), template
    for template in set(posts) - set(hot):
        path = template.replace("{name}", "tiny")
        assert not any(route.pattern.fullmatch(path) for route in DIRECT_ANSWERS), template


def run_asgi(client: TestClient, messages: list[Message]) -> list[Message]:
    """Drive the real app at the ASGI level with these incoming messages; what it sent back.

    Only for bodies refused before any lookup: this runs on a loop of its own, not the app's.
    """
    incoming = iter(messages)
    sent: list[Message] = []

    async def receive() -> Message:
        return next(incoming)

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/predict",
        "raw_path": b"/predict",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json")],
        "server": ("testserver", 80),
        "client": ("testclient", 50000),
    }
    asyncio.run(client.app(scope, receive, send))  # type: ignore[arg-type]
    return sent


def test_a_body_in_chunks_is_read_whole(client: TestClient) -> None:
    chunks = [b'{"model": "tiny", ', b'"window": [{"close": 1}], "version": 0}']
    sent = run_asgi(
        client,
        [
            {"type": "http.request", "body": chunks[0], "more_body": True},
            {"type": "http.request", "body": chunks[1], "more_body": False},
        ],
    )
    # Refused by pydantic before any lookup: the whole body was parsed, as one.
    assert sent[0]["status"] == 422
    assert orjson.loads(sent[1]["body"])["detail"].startswith(
        "body.version: Input should be greater than or equal to 1"
    )


def test_a_client_gone_before_its_body_ends_gets_no_answer(client: TestClient) -> None:
    messages: list[Message] = [
        {"type": "http.request", "body": b'{"model"', "more_body": True},
        {"type": "http.disconnect"},
    ]
    assert run_asgi(client, messages) == []
