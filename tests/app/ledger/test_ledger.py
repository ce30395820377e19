"""The ledger keeps what each protocol served, once per distinct forecast, and scores it against later closes."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.ledger.postgres import PostgresLedger
from app.ledger.scoring import score_dataset, split_suspect
from app.ledger.store import LedgerStore, SqliteLedger
from tests.fakes import fake_app
from tests.helpers import WINDOW, local_client, require_postgres, sample_rows, scratch_database
from training.store import ModelStore


@pytest.fixture
def client(model_store: ModelStore, tmp_path: Path) -> Any:
    with local_client(fake_app(model_store.root, tmp_path / "var", ledger_flush_seconds=3600)) as client:
        yield client


def flush(client: TestClient) -> None:
    run_on_app(client, client.app.state.ledger.flush())  # type: ignore[attr-defined]


def run_on_app(client: TestClient, awaitable: Any) -> Any:
    async def wrapped() -> Any:
        return await awaitable

    return client.portal.call(wrapped)  # type: ignore[union-attr]


def kept(client: TestClient, forecast_id: str) -> dict[str, Any] | None:
    return client.app.state.ledger.store.forecast(forecast_id)  # type: ignore[attr-defined,no-any-return]


def test_a_dated_forecast_is_kept_once_with_its_hits(client: TestClient) -> None:
    body = {"model": "tiny", "window": sample_rows(WINDOW)}
    first, again = client.post("/predict", json=body), client.post("/predict", json=body)
    assert first.status_code == again.status_code == 200
    answer = first.json()
    assert answer["forecast_id"] == again.json()["forecast_id"] == first.headers["x-forecast-id"]
    assert answer["scorable"] is True and answer["skill"]["in_sample"] is False
    flush(client)
    row = kept(client, answer["forecast_id"])
    assert row is not None
    assert (row["hits"], row["origin"], row["model"], row["version"]) == (2, body["window"][-1]["date"], "tiny", 1)
    assert row["label_last"] == answer["last_value"]
    assert [step["date"] for step in row["steps"]] == [step["date"] for step in answer["forecast"]]
    assert [step["close"] for step in row["steps"]] == [step["close"] for step in answer["forecast"]]
    assert row["steps"][0]["bounds"]["90"] == [
        answer["forecast"][0]["intervals"]["90"]["lower"],
        answer["forecast"][0]["intervals"]["90"]["upper"],
    ]


def test_every_protocol_answers_with_ids_and_arrays_may_send_their_last_date(client: TestClient) -> None:
    rows = sample_rows(WINDOW)
    arrays = [[row[column] for column in ("open", "high", "low", "close", "volume")] for row in rows]
    undated = client.post("/predict", json={"model": "tiny", "window": arrays}).json()
    assert undated["scorable"] is False and undated["skill"]["in_sample"] is None
    assert {step["date"] for step in undated["forecast"]} == {None}
    dated = client.post("/predict", json={"model": "tiny", "window": arrays, "last_date": rows[-1]["date"]}).json()
    assert dated["scorable"] is True and dated["forecast"][0]["date"] is not None
    # The same numbers and origin as the rows form: the same forecast, the same id.
    assert dated["forecast_id"] == client.post("/predict", json={"model": "tiny", "window": rows}).json()["forecast_id"]
    batch = client.post(
        "/predict/batch", json={"model": "tiny", "windows": [arrays, arrays], "last_dates": [None, rows[-1]["date"]]}
    ).json()
    assert batch["forecast_ids"] == [undated["forecast_id"], dated["forecast_id"]]
    v2 = client.post(
        "/v2/models/tiny/infer",
        json={
            "inputs": [{"name": "window", "datatype": "FP64", "shape": [1, WINDOW, 5], "data": arrays}],
            "parameters": {"last_date": rows[-1]["date"]},
        },
    ).json()
    assert v2["parameters"]["forecast_ids"] == dated["forecast_id"]
    tf = client.post("/v1/models/tiny:predict", json={"instances": [arrays], "last_date": rows[-1]["date"]}).json()
    assert tf["forecast_ids"] == [dated["forecast_id"]]
    flush(client)
    assert kept(client, dated["forecast_id"])["hits"] == 5  # type: ignore[index]
    assert kept(client, undated["forecast_id"])["origin"] is None  # type: ignore[index]


def test_a_bad_last_date_is_a_422_naming_the_field(client: TestClient) -> None:
    arrays = [[1.0, 1.1, 0.9, 1.0, 1000.0]] * WINDOW
    answer = client.post("/v1/models/tiny:predict", json={"instances": [arrays], "last_date": ["2020-01-01", "x"]})
    assert answer.status_code == 422 and "last_date" in answer.text
    v2 = client.post(
        "/v2/models/tiny/infer",
        json={
            "inputs": [{"name": "window", "datatype": "FP64", "shape": [1, WINDOW, 5], "data": arrays}],
            "parameters": {"last_date": "yesterday"},
        },
    )
    assert v2.status_code == 422 and "parameters.last_date" in v2.text
    assert client.post("/predict", json={"model": "tiny", "window": arrays, "last_date": "soon"}).status_code == 422


def test_a_window_ending_before_trained_through_is_in_sample(model_store: ModelStore, tmp_path: Path) -> None:
    old = sample_rows(WINDOW + 250)[:WINDOW]
    with local_client(fake_app(model_store.root, tmp_path / "var")) as client:
        answer = client.post("/predict", json={"model": "tiny", "window": old})
        assert answer.status_code == 200 and answer.json()["skill"]["in_sample"] is True
    with local_client(fake_app(model_store.root, tmp_path / "var", in_sample_forecasts="refuse")) as client:
        refused = client.post("/predict", json={"model": "tiny", "window": old})
        assert refused.status_code == 422
        assert "in-sample" in refused.json()["detail"] and old[-1]["date"] in refused.json()["detail"]
        assert client.post("/predict", json={"model": "tiny", "window": sample_rows(WINDOW)}).status_code == 200


def test_a_full_queue_drops_and_counts_but_answers(model_store: ModelStore, tmp_path: Path) -> None:
    app = fake_app(model_store.root, tmp_path / "var", ledger_queue_size=2, ledger_flush_seconds=3600)
    with local_client(app) as client:
        for _ in range(5):
            assert client.post("/predict", json={"model": "tiny", "window": sample_rows(WINDOW)}).status_code == 200
        assert client.app.state.ledger.dropped == 3  # type: ignore[attr-defined]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LedgerStore]:
    """The same store tests against both backends: SQLite (embedded) and the real PostgreSQL (scaled out)."""
    if request.param == "sqlite":
        yield SqliteLedger(tmp_path / "ledger.sqlite3")
        return
    require_postgres()
    with scratch_database() as url:
        ledger = PostgresLedger(url)
        yield ledger
        ledger.close()


def test_scoring_in_log_returns_with_bands_replays_and_splits_apart(store: LedgerStore) -> None:
    steps = [
        {"date": "2020-01-02", "close": 101.0, "bounds": {"90": [99.0, 103.0]}},
        {"date": "2020-01-03", "close": 102.0, "bounds": {"90": [98.0, 106.0]}},
    ]
    base = {
        "model": "m", "version": 1, "served_as": "champion", "dataset": "d", "key_name": None, "request_id": None,
        "origin": "2020-01-01", "in_sample": False, "label": "close", "label_last": 100.0, "scale": 0.01,
        "steps": steps, "served_at": "2020-01-01T21:00:00+00:00",
    }  # fmt: skip
    store.add_forecasts([{**base, "forecast_id": "live", "data_through": "2020-01-01"}])
    store.add_forecasts([{**base, "forecast_id": "replay", "data_through": "2020-01-03"}])
    assert score_dataset(store, "d", {"close": {"2020-01-02": 104.0}}) == 2
    scores = {row["forecast_id"]: row for row in store.scores("m")}
    live = scores["live"]
    assert live["log_error"] == pytest.approx(math.log(104 / 101), abs=1e-15)
    assert live["naive_log_error"] == pytest.approx(math.log(104 / 100), abs=1e-15)
    assert (live["inside"], live["replay"], live["split_suspect"]) == ({"90": 0}, 0, 0)
    assert scores["replay"]["replay"] == 1
    # The next close scores step 2 only; scoring again adds nothing.
    closes = {"close": {"2020-01-02": 104.0, "2020-01-03": 50.5}}
    assert score_dataset(store, "d", closes) == 2
    assert score_dataset(store, "d", closes) == 0
    second = [row for row in store.scores("m") if row["step"] == 2]
    assert {row["split_suspect"] for row in second} == {1}
    assert store.open_forecasts("d") == []


def test_split_ratios_are_suspected_and_ordinary_moves_are_not() -> None:
    assert split_suspect(50.0, 100.0) and split_suspect(300.0, 100.0) and split_suspect(25.6, 100.0)
    assert not split_suspect(80.0, 100.0) and not split_suspect(130.0, 100.0)


def test_retention_forgets_forecasts_and_keeps_their_scores(store: LedgerStore) -> None:
    row = {
        "forecast_id": "old", "model": "m", "version": 1, "served_as": "champion", "dataset": "d",
        "key_name": None, "request_id": None, "origin": "2020-01-01", "in_sample": False, "data_through": None,
        "label": "close", "label_last": 100.0, "scale": None,
        "steps": [{"date": "2020-01-02", "close": 101.0, "bounds": {}}], "served_at": "2020-01-01T21:00:00+00:00",
    }  # fmt: skip
    store.add_forecasts([row])
    score_dataset(store, "d", {"close": {"2020-01-02": 100.5}})
    assert store.forget_before("2021-01-01") == 1
    assert store.forecast("old") is None and len(store.scores("m")) == 1
    assert store.models_of("d") == []


def test_a_forecast_served_again_is_one_row_with_more_hits(store: LedgerStore) -> None:
    row = {
        "forecast_id": "same", "model": "m", "version": 1, "served_as": "champion", "dataset": "d",
        "key_name": "desk", "request_id": "r1", "origin": "2020-01-01", "in_sample": False, "data_through": None,
        "label": "close", "label_last": 100.0, "scale": None,
        "steps": [{"date": "2020-01-02", "close": 101.0, "bounds": {}}], "served_at": "2020-01-01T21:00:00+00:00",
    }  # fmt: skip
    store.add_forecasts([row])
    store.add_forecasts([{**row, "request_id": "r2", "served_at": "2020-01-01T21:05:00+00:00"}])
    kept = store.forecast("same")
    assert kept is not None
    assert (kept["hits"], kept["request_id"], kept["last_served_at"]) == (2, "r1", "2020-01-01T21:05:00+00:00")
    assert store.counts("m") == {"kept": 1, "hits": 2, "undated": 0}
    assert store.models_of("d") == ["m"]
