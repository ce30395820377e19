"""GET /models/{name}/monitoring[.png] and the online metrics, over score rows written straight into the ledger."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import pytest
from fastapi.testclient import TestClient

from app.api.examples import MONITORING_EXAMPLE
from app.api.responses import MonitoringPublic, MonitoringStatus
from app.ledger.monitoring import STATUS_CODES
from tests.fakes import fake_app
from tests.helpers import assert_documented, local_client, score_row, session
from training.store import ModelStore

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SESSIONS = 30
# The 90 % band misses in sessions 3, 13 and 23 (10 %); the others always cover.
MISSED = {3, 13, 23}


def kept_forecast(origin: int | None, forecast_id: str) -> dict[str, Any]:
    """A `ledger_forecasts` row of `tiny` v1 as the recorder writes it, one step with its bands."""
    return {
        "forecast_id": forecast_id,
        "model": "tiny",
        "version": 1,
        "served_as": "champion",
        "dataset": "msft",
        "origin": None if origin is None else session(origin),
        "in_sample": None if origin is None else False,
        "label": "close",
        "label_last": 100.0,
        "steps": [
            {
                "date": None if origin is None else session(origin + 1),
                "close": 100.5,
                "bounds": {"80": [99.0, 102.0], "90": [98.5, 102.5], "95": [98.0, 103.0]},
            }
        ],
        "served_at": "2024-06-01T00:00:00+00:00",
    }


@pytest.fixture(scope="module")
def monitored(model_store: ModelStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """An app (fake inference) whose ledger holds 30 scored sessions of `tiny` v1 and one undated forecast."""
    with local_client(fake_app(model_store.root, tmp_path_factory.mktemp("var"))) as client:
        store = client.app.state.ledger.store  # type: ignore[attr-defined]
        store.add_forecasts(
            [kept_forecast(origin, f"tiny-1-champion-{origin}") for origin in range(SESSIONS)]
            + [kept_forecast(None, "undated")]
        )
        store.add_scores(
            [
                score_row(origin, actual=100.0 + origin % 3, inside={"80": 1, "90": int(origin not in MISSED)})
                for origin in range(SESSIONS)
            ]
        )
        yield client


def test_the_answer_holds_what_the_ledger_scored(monitored: TestClient) -> None:
    response = monitored.get("/models/tiny/monitoring")
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model"] == "tiny" and answer["served_version"] == 1
    assert answer["status"] == "ok" and answer["status_of"] == {"version": 1, "served_as": "champion"}
    assert answer["kept"] == {"kept": SESSIONS + 1, "hits": SESSIONS + 1, "undated": 1}
    assert answer["unscorable"] == 1
    (group,) = answer["groups"]
    window = group["windows"]["since_live"]
    assert window["sessions"] == window["forecasts"] == SESSIONS
    assert window["coverage"]["90"]["coverage"] == pytest.approx(27 / 30, abs=1e-12)
    assert window["coverage"]["80"]["coverage"] == 1.0
    assert group["windows"]["last_20"]["first_origin"] == session(10)
    assert_documented(monitored.get("/openapi.json").json(), "get", "/models/{name}/monitoring", 200, answer)


def test_an_unknown_model_is_404_as_everywhere(monitored: TestClient) -> None:
    for path in ("/models/nope/monitoring", "/models/nope/monitoring.png"):
        response = monitored.get(path)
        assert response.status_code == 404
        assert response.json() == monitored.get("/models/nope").json()


def test_the_chart_is_a_png_drawn_afresh(monitored: TestClient) -> None:
    response = monitored.get("/models/tiny/monitoring.png")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.headers["cache-control"] == "no-cache"
    assert response.content.startswith(PNG_SIGNATURE) and len(response.content) > 10_000


def test_a_model_without_scores_gets_a_chart_that_says_so(monitored: TestClient) -> None:
    answer = monitored.get("/models/tiny-h5/monitoring").json()
    assert answer["status"] == "insufficient_data" and answer["groups"] == []
    response = monitored.get("/models/tiny-h5/monitoring.png")
    assert response.status_code == 200 and response.content.startswith(PNG_SIGNATURE)


def test_online_metrics_read_the_ledger_when_scraped(monitored: TestClient) -> None:
    text = monitored.get("/metrics").text

    def value(sample: str) -> float:
        match = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.MULTILINE)
        assert match, f"{sample} not in /metrics"
        return float(match.group(1))

    assert value('stockcast_online_scored_total{model="tiny"}') == SESSIONS
    assert value('stockcast_online_coverage{level="90",model="tiny"}') == pytest.approx(0.9)
    assert value('stockcast_online_coverage{level="80",model="tiny"}') == 1.0
    assert value('stockcast_online_ratio_to_naive{model="tiny"}') > 0
    assert value('stockcast_online_status{model="tiny"}') == STATUS_CODES["ok"]
    # Served, never scored.
    assert value('stockcast_online_status{model="tiny-h5"}') == STATUS_CODES["insufficient_data"]
    assert value('stockcast_online_scored_total{model="tiny-h5"}') == 0
    assert value("stockcast_ledger_dropped_total") == 0
    assert value("stockcast_ledger_written_total") >= 0
    # The help text spells out the status coding the gauge uses.
    (help_line,) = re.findall(r"^# HELP stockcast_online_status (.*)$", text, re.MULTILINE)
    assert all(f"{code} {status}" in help_line for status, code in STATUS_CODES.items())


def test_with_the_ledger_off_monitoring_says_so(model_store: ModelStore, tmp_path: Path) -> None:
    with local_client(fake_app(model_store.root, tmp_path / "var", ledger=False)) as client:
        for path in ("/models/tiny/monitoring", "/models/tiny/monitoring.png"):
            response = client.get(path)
            assert response.status_code == 409
            assert response.json() == {
                "detail": "the forecast ledger is off (STOCKCAST_LEDGER=false): served forecasts are not kept, so"
                " none are scored; turn it on to monitor a model"
            }
        assert "stockcast_online_status" not in client.get("/metrics").text


def test_the_documented_example_is_a_valid_answer() -> None:
    assert MonitoringPublic.model_validate(MONITORING_EXAMPLE).model_dump(exclude_unset=True) == MONITORING_EXAMPLE
    assert set(get_args(MonitoringStatus)) == set(STATUS_CODES)
