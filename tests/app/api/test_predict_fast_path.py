"""The /predict fast path: the same answers as FastAPI's route, and everything unusual left to the route."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient
from starlette.types import Message, Receive, Scope, Send

import app.api.routes.predict as predict_route
from app.api.predict_fast_path import PredictFastPath
from tests.helpers import WINDOW, make_settings
from training.store import ModelStore

COLUMNS = ["open", "high", "low", "close", "volume"]
ROW = [75.0, 76.0, 74.0, 75.5, 1.0e7]


def arrays_body(**selector: Any) -> dict[str, Any]:
    """A valid arrays-form body for the tiny models (columns open, high, low, close, volume)."""
    window = [[value * (1 + 0.001 * day) for value in ROW] for day in range(WINDOW)]
    return {"model": "tiny", "window": window, **selector}


@pytest.fixture(scope="module")
def route_client(model_store: ModelStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The same app over the same store, with every /predict through FastAPI's route."""
    from app.main import create_app

    settings = make_settings(model_store.root, tmp_path_factory.mktemp("var"), predict_fast_path=False)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def route_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the requests that reach the FastAPI route's forecasting call."""
    calls: list[int] = []
    real = predict_route.predict_one

    async def counted(*args: Any, **kwargs: Any) -> bytes:
        calls.append(1)
        return await real(*args, **kwargs)

    monkeypatch.setattr(predict_route, "predict_one", counted)
    return calls


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


@pytest.mark.parametrize(
    "body",
    [
        arrays_body(),
        arrays_body(version=2),
        arrays_body(alias="champion"),
        {**arrays_body(), "model": "tiny-h5"},
    ],
    ids=["default", "pinned", "alias", "horizon-5"],
)
def test_fast_path_answers_like_the_route_without_calling_it(
    client: TestClient, route_client: TestClient, route_calls: list[int], body: dict[str, Any]
) -> None:
    fast = client.post("/predict", json=body)
    assert fast.status_code == 200, fast.text
    assert route_calls == []
    routed = route_client.post("/predict", json=body)
    assert route_calls == [1]
    assert routed.status_code == 200
    assert fast.headers["content-type"] == routed.headers["content-type"] == "application/json"
    assert int(fast.headers["content-length"]) == len(fast.content)
    close_enough(orjson.loads(fast.content), orjson.loads(routed.content))


@pytest.mark.parametrize(
    "body",
    [
        {**arrays_body(), "model": "nope"},
        arrays_body(version=99),
        arrays_body(alias="nope"),
        {**arrays_body(), "window": arrays_body()["window"][:3]},
        {**arrays_body(), "window": [row[:4] for row in arrays_body()["window"]]},
        {**arrays_body(), "window": [[-1.0, *row[1:]] for row in arrays_body()["window"]]},
    ],
    ids=["unknown-model", "unknown-version", "unknown-alias", "short-window", "missing-column", "negative-price"],
)
def test_domain_errors_from_the_fast_path_equal_the_routes(
    client: TestClient, route_client: TestClient, route_calls: list[int], body: dict[str, Any]
) -> None:
    fast = client.post("/predict", json=body)
    assert route_calls == [], "the fast path answers its own errors"
    routed = route_client.post("/predict", json=body)
    assert 400 <= fast.status_code < 500
    assert (fast.status_code, fast.content) == (routed.status_code, routed.content)


@pytest.mark.parametrize(
    ("raw", "forecast_calls"),
    [
        # Rows, ragged arrays and a version as a numeric string (which pydantic
        # accepts) pass parsing and reach the forecasting call; its shape check refuses them.
        (orjson.dumps({"model": "tiny", "window": [dict(zip(COLUMNS, ROW, strict=True))] * 2}), 2),
        (b'{"model": "tiny", "window": [[1, 2], [3]]}', 2),
        (b'{"model": "tiny", "window": [[NaN, 1, 1, 1, 1]]}', 0),
        (b'{"model": "tiny", "window": [[1, 1, 1, 1, 1]], "extra": 1}', 0),
        (b'{"model": "tiny", "window": [[1, 1, 1, 1, 1]], "version": "1"}', 2),
        (b"not json", 0),
        (b"", 0),
    ],
    ids=["rows", "ragged", "nan", "unknown-key", "string-version", "invalid-json", "empty"],
)
def test_unusual_bodies_reach_the_route_whole(
    client: TestClient, route_client: TestClient, route_calls: list[int], raw: bytes, forecast_calls: int
) -> None:
    headers = {"content-type": "application/json"}
    fast = client.post("/predict", content=raw, headers=headers)
    routed = route_client.post("/predict", content=raw, headers=headers)
    assert fast.status_code == routed.status_code == 422
    assert fast.content == routed.content
    assert len(route_calls) == forecast_calls


def test_rows_windows_are_forecast_by_the_route(client: TestClient, route_calls: list[int]) -> None:
    rows = [{"date": f"2017-10-{day + 2:02d}", **dict(zip(COLUMNS, ROW, strict=True))} for day in range(WINDOW)]
    answer = client.post("/predict", json={"model": "tiny", "window": rows})
    assert answer.status_code == 200, answer.text
    assert route_calls == [1]
    assert answer.json()["forecast"][0]["date"] is not None


def test_other_methods_and_paths_are_left_to_fastapi(client: TestClient, route_client: TestClient) -> None:
    for method, path in (("GET", "/predict"), ("POST", "/predict/"), ("PUT", "/predict")):
        fast = client.request(method, path, json=arrays_body(), follow_redirects=False)
        routed = route_client.request(method, path, json=arrays_body(), follow_redirects=False)
        assert (fast.status_code, fast.content) == (routed.status_code, routed.content)
    batch = client.post("/predict/batch", json={"model": "tiny", "windows": [arrays_body()["window"]]})
    assert batch.status_code == 200


def test_an_unexpected_error_is_a_logged_500_not_a_crash(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    import app.api.predict_fast_path as fast_path

    async def broken(*args: Any, **kwargs: Any) -> bytes:
        raise RuntimeError("boom")

    monkeypatch.setattr(fast_path, "predict_one", broken)
    # A second client over the same running app, one that turns server errors into answers.
    lenient = TestClient(client.app, raise_server_exceptions=False)
    answer = lenient.post("/predict", json=arrays_body())
    assert answer.status_code == 500
    assert answer.json() == {"detail": "internal error; see the server log"}
    monkeypatch.undo()
    assert client.post("/predict", json=arrays_body()).status_code == 200


def run_asgi(middleware: PredictFastPath, messages: list[Message]) -> list[Message]:
    """Drive the middleware at the ASGI level with these incoming messages; what it sent back."""
    incoming = iter(messages)
    sent: list[Message] = []

    async def receive() -> Message:
        return next(incoming)

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {"type": "http", "method": "POST", "path": "/predict", "root_path": "", "headers": []}
    asyncio.run(middleware(scope, receive, send))
    return sent


def test_a_body_in_chunks_reaches_the_route_whole() -> None:
    seen: list[bytes] = []

    async def downstream(scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        assert message["more_body"] is False
        seen.append(message["body"])
        await send({"type": "http.response.start", "status": 422, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    chunks = [b'{"model": "tiny", ', b'"window": [{"close": 1}]}']
    sent = run_asgi(
        PredictFastPath(downstream),
        [
            {"type": "http.request", "body": chunks[0], "more_body": True},
            {"type": "http.request", "body": chunks[1], "more_body": False},
        ],
    )
    assert seen == [b"".join(chunks)]
    assert sent[0]["status"] == 422


def test_a_client_gone_before_its_body_ends_gets_no_answer() -> None:
    async def downstream(scope: Scope, receive: Receive, send: Send) -> None:
        raise AssertionError("nothing should reach the route")

    messages: list[Message] = [
        {"type": "http.request", "body": b'{"model"', "more_body": True},
        {"type": "http.disconnect"},
    ]
    assert run_asgi(PredictFastPath(downstream), messages) == []


def test_fast_and_routed_forecasts_agree_with_each_other_over_many_windows(
    client: TestClient, route_client: TestClient
) -> None:
    rng = np.random.default_rng(3)
    for _ in range(5):
        window = (np.array(ROW) * rng.uniform(0.9, 1.1, size=(WINDOW, len(ROW)))).round(2).tolist()
        body = {"model": "tiny", "window": window}
        close_enough(client.post("/predict", json=body).json(), route_client.post("/predict", json=body).json())
