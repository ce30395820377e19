"""Request ids in headers and log lines, the access log, JSON logs, and /metrics after real requests."""

from __future__ import annotations

import json
import logging
import re
import urllib.request
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.core.logging import JsonFormatter, install_request_ids
from tests.fakes import fake_app
from tests.helpers import WINDOW, free_port, local_client

ROW = [75.0, 76.0, 74.0, 75.5, 1.0e7]
ARRAYS_BODY = {"model": "tiny", "window": [[value * (1 + 0.001 * day) for value in ROW] for day in range(WINDOW)]}


def access_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The access log records captured so far."""
    return [record for record in caplog.records if record.name == "stockcast.access"]


def test_a_sent_request_id_comes_back_and_is_in_the_access_log(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="stockcast.access")
    response = client.post("/predict", json=ARRAYS_BODY, headers={"X-Request-ID": "desk-42.a"})
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == "desk-42.a"
    (line,) = access_lines(caplog)
    assert line.request_id == "desk-42.a"  # type: ignore[attr-defined]
    assert re.fullmatch(r"POST /predict 200 \d+\.\d ms key=anonymous", line.getMessage())


def test_an_insane_request_id_is_replaced(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="stockcast.access")
    response = client.get("/models/tiny", headers={"X-Request-ID": "x" * 129})
    generated = response.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{16}", generated)
    (line,) = access_lines(caplog)
    assert line.request_id == generated  # type: ignore[attr-defined]
    # The route template, never the raw path.
    assert line.getMessage().startswith("GET /models/{name} 200 ")


def test_an_unexpected_error_is_logged_with_the_request_id_and_not_described(
    client: TestClient, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The one /predict answer, which the gateway calls.
    import app.api.predict as handler

    async def broken(*args: object, **kwargs: object) -> bytes:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(handler, "predict_one", broken)
    caplog.set_level(logging.INFO, logger="stockcast")
    response = client.post("/predict", json=ARRAYS_BODY, headers={"X-Request-ID": "boom-1"})
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error; see the server log"}
    assert response.headers["x-request-id"] == "boom-1"
    (error,) = [record for record in caplog.records if record.name == "stockcast.errors"]
    assert error.request_id == "boom-1"  # type: ignore[attr-defined]
    assert error.getMessage() == "unhandled error on POST /predict" and error.exc_info is not None
    (line,) = access_lines(caplog)
    assert line.request_id == "boom-1" and line.getMessage().startswith("POST /predict 500 ")  # type: ignore[attr-defined]


def test_json_log_lines_hold_the_request_id_and_the_access_fields() -> None:
    install_request_ids()
    record = logging.getLogRecordFactory()("stockcast.access", logging.INFO, __file__, 1, "GET %s", ("/health",), None)
    record.request_id = "abc"
    record.status = 200
    line = json.loads(JsonFormatter().format(record))
    assert {key: line[key] for key in ("level", "logger", "request_id", "message", "status")} == {
        "level": "INFO",
        "logger": "stockcast.access",
        "request_id": "abc",
        "message": "GET /health",
        "status": 200,
    }


def test_metrics_after_real_requests(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    # /metrics reads the state of the latest app started in this process (`metrics.StateCollector`); other
    # session apps on the shared store may have started since and seen another champion for a while.
    from app.core import metrics
    from app.main import service_state

    state = client.app.state  # type: ignore[attr-defined]
    monkeypatch.setattr(
        metrics.STATE, "source", lambda: service_state(state.registry, state.jobs, state.ledger, state.monitor)
    )
    assert client.post("/predict", json=ARRAYS_BODY).status_code == 200
    assert client.post("/predict", json={"model": "nope", "window": ARRAYS_BODY["window"]}).status_code == 404
    assert client.get("/models/tiny").status_code == 200
    assert client.get("/no/such/path").status_code == 404
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    text = response.text

    def value(sample: str) -> float:
        match = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.MULTILINE)
        assert match, f"{sample} not in /metrics"
        return float(match.group(1))

    assert value('stockcast_http_requests_total{method="POST",route="/predict",status="200"}') >= 1
    assert value('stockcast_http_requests_total{method="POST",route="/predict",status="404"}') >= 1
    assert value('stockcast_http_requests_total{method="GET",route="/models/{name}",status="200"}') >= 1
    assert value('stockcast_http_requests_total{method="GET",route="unmatched",status="404"}') >= 1
    assert value('stockcast_http_request_duration_seconds_count{method="POST",route="/predict"}') >= 2
    assert value("stockcast_http_requests_in_flight") == 1  # the scrape itself
    assert value("stockcast_predict_batch_windows_count") >= 1
    assert value("stockcast_predict_queue_wait_seconds_count") >= 1
    assert value("stockcast_inference_call_duration_seconds_count") >= 1
    assert value('stockcast_model_loaded_versions{model="tiny"}') >= 1
    assert value('stockcast_model_served_version{model="tiny"}') == 1
    assert value('stockcast_jobs{status="queued"}') == 0
    assert value("stockcast_inference_process_restarts_total") == 0
    # Labels come from route templates and stored names only: no raw path reaches them.
    assert "/no/such/path" not in text and "nope" not in text


def test_metrics_on_a_separate_port_leave_the_api_port(tmp_path: Path) -> None:
    port = free_port()
    with local_client(fake_app(tmp_path / "models", tmp_path / "var", metrics_port=port)) as separate:
        assert separate.get("/metrics").status_code == 404
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            assert answer.status == 200
            assert b"stockcast_http_requests_total" in answer.read()
