"""/predict and /predict/batch: answers in price units, and a clear 4xx for every bad window."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.api.schemas import BatchPredictResponse, PredictResponse
from tests.helpers import COLUMNS, WINDOW, sample_rows
from training.artifact import load_version
from training.store import ModelStore


def test_predict_rows_answers_in_price_units_with_dates_and_intervals(client: TestClient) -> None:
    rows = sample_rows()
    response = client.post("/predict", json={"model": "tiny", "window": rows})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "tiny" and body["version"] == 1  # the champion, not the newest
    assert body["last_value"] == rows[-1]["close"]
    (step,) = body["forecast"]
    assert step["step"] == 1
    # 2017-11-10 was a Friday: the next business day is Monday the 13th.
    assert rows[-1]["date"] == "2017-11-10" and step["date"] == "2017-11-13"
    assert 0.8 * rows[-1]["close"] < step["close"] < 1.2 * rows[-1]["close"]
    for level in ("80", "90", "95"):
        assert step["intervals"][level]["lower"] < step["close"] < step["intervals"][level]["upper"]
    assert step["intervals"]["80"]["upper"] <= step["intervals"]["95"]["upper"]


def test_predict_equals_the_keras_model_in_price_units(real_client: TestClient, model_store: ModelStore) -> None:
    client = real_client
    rows = sample_rows(dated=False)
    response = client.post("/predict", json={"model": "tiny", "version": 2, "window": rows})
    assert response.status_code == 200, response.text
    loaded = load_version(model_store, "tiny", 2)
    expected = loaded.predict_prices(np.array([[[row[c] for c in COLUMNS] for row in rows]]))[0, 0]
    assert response.json()["version"] == 2
    assert response.json()["forecast"][0]["close"] == pytest.approx(expected, rel=1e-5)
    assert response.json()["forecast"][0]["date"] is None


def test_predict_arrays_in_feature_order_match_rows(client: TestClient) -> None:
    rows = sample_rows(dated=False)
    arrays = [[row[column] for column in COLUMNS] for row in rows]
    by_rows = client.post("/predict", json={"model": "tiny", "window": rows}).json()
    by_arrays = client.post("/predict", json={"model": "tiny", "window": arrays}).json()
    assert by_arrays["forecast"][0]["close"] == pytest.approx(by_rows["forecast"][0]["close"], rel=1e-6)


def test_horizon_five_model_returns_five_dated_steps_with_bounds(client: TestClient) -> None:
    response = client.post("/predict", json={"model": "tiny-h5", "window": sample_rows()})
    assert response.status_code == 200, response.text
    steps = response.json()["forecast"]
    assert [step["step"] for step in steps] == [1, 2, 3, 4, 5]
    # From Friday 2017-11-10: the next five business days.
    assert [step["date"] for step in steps] == ["2017-11-13", "2017-11-14", "2017-11-15", "2017-11-16", "2017-11-17"]
    for step in steps:
        for level in ("80", "90", "95"):
            assert step["intervals"][level]["lower"] < step["close"] < step["intervals"][level]["upper"]


def test_alias_selects_the_version(client: TestClient) -> None:
    response = client.post("/predict", json={"model": "tiny", "alias": "champion", "window": sample_rows()})
    assert response.status_code == 200 and response.json()["version"] == 1


def test_batch_predict_matches_single_predictions(client: TestClient) -> None:
    first, second = sample_rows(WINDOW + 1)[:-1], sample_rows(WINDOW)
    batch = client.post("/predict/batch", json={"model": "tiny", "windows": [first, second]})
    assert batch.status_code == 200, batch.text
    forecasts = batch.json()["forecasts"]
    assert len(forecasts) == 2
    for window, forecast in zip((first, second), forecasts, strict=True):
        single = client.post("/predict", json={"model": "tiny", "window": window}).json()
        assert forecast[0]["close"] == pytest.approx(single["forecast"][0]["close"], rel=1e-5)
        assert forecast[0]["date"] == single["forecast"][0]["date"]


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"model": "nope", "window": sample_rows()}, 404, "unknown model 'nope'"),
        ({"model": "tiny", "version": 99, "window": sample_rows()}, 404, "has no version 99"),
        # An alias no module creates: test_openapi points 'staging' at v2 in the shared store.
        ({"model": "tiny", "alias": "absent", "window": sample_rows()}, 404, "has no alias 'absent'"),
        (
            {"model": "tiny", "window": sample_rows(WINDOW - 1)},
            422,
            "expected 10 rows of [open, high, low, close, volume], got 9",
        ),
        ({"model": "tiny", "window": sample_rows(WINDOW + 5)}, 422, "expected 10 rows"),
        ({"model": "tiny", "window": []}, 422, "window must be a non-empty list of rows"),
        ({"model": "tiny", "window": "abc"}, 422, "window must be a non-empty list of rows"),
        ({"model": "tiny"}, 422, "body.window: Field required"),
        ({"window": sample_rows()}, 422, "body.model: Field required"),
        ({"model": "tiny", "version": 1, "alias": "champion", "window": sample_rows()}, 422, "either version or alias"),
        (
            {"model": "tiny", "version": 0, "window": sample_rows()},
            422,
            "body.version: Input should be greater than or equal to 1",
        ),
        ({"model": "../etc", "window": sample_rows()}, 422, "body.model: String should match pattern"),
    ],
)
def test_bad_requests_get_a_clear_4xx(client: TestClient, body: dict[str, Any], status: int, fragment: str) -> None:
    response = client.post("/predict", json=body)
    assert response.status_code == status, response.text
    assert fragment in response.json()["detail"]


def _rows_with(index: int, **changes: Any) -> list[dict[str, Any]]:
    rows = sample_rows()
    rows[index] = {**rows[index], **changes}
    return rows


@pytest.mark.parametrize(
    ("window", "fragment"),
    [
        (_rows_with(3, close=-5.0), "body.window[3].close: Input should be greater than 0"),
        (_rows_with(0, open=0), "body.window[0].open: Input should be greater than 0"),
        (_rows_with(4, close="abc"), "body.window[4].close: Input should be a valid number"),
        (_rows_with(2, volume=-1), "body.window[2].volume: Input should be greater than or equal to 0"),
        (
            [{k: v for k, v in row.items() if k != "high"} for row in sample_rows()],
            "body.window[0].high: Field required",
        ),
        (_rows_with(1, clsoe=3.0), "body.window[1].clsoe: Extra inputs are not permitted"),
        (_rows_with(5, date="2001-99-99"), "body.window[5].date"),
        (_rows_with(9, date="2000-01-03"), "dates must be strictly increasing"),
        (_rows_with(9, date=None), "give a date on every row or on none"),
        (
            [[1.0, 2.0, 0.5, 1.5, 100.0]] * 9 + [[1.0, 2.0, 0.5, 1.5]],
            "window[9]: expected 5 values [open, high, low, close, volume], got 4",
        ),
        ([[1.0, 2.0, 0.5, -1.5, 100.0]] * 10, "window[0].close: prices must be positive"),
        ([[1.0, 2.0, 0.5, 1.5, 100.0]] * 6 + [[0.0, 2.0, 0.5, 1.5, 0.0]] * 4, "window[6].open: prices must be"),
        ([[1.0, 2.0, 0.5, 1.5, 100.0]] * 7 + [[1.0, 2.0, 0.5, 1.5, -3.0]] * 3, "window[7].volume: must not be"),
        ([[1.0, 2.0, 0.5, 1.5, "x"]] * 10, "body.window[0][4]: Input should be a valid number"),
        ([[1.0, 2.0, 0.5, 1.5, 100.0]] * 10 + [{"open": 1}], "body.window[10]: Input should be a valid array"),
    ],
)
def test_malformed_windows_name_the_row_and_field(client: TestClient, window: Any, fragment: str) -> None:
    response = client.post("/predict", json={"model": "tiny", "window": window})
    assert response.status_code == 422, response.text
    assert fragment in response.json()["detail"]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_prices_are_refused(client: TestClient, literal: str) -> None:
    rows = sample_rows(dated=False)
    import json

    text = json.dumps({"model": "tiny", "window": rows}).replace(str(rows[3]["close"]), literal, 1)
    response = client.post("/predict", content=text, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert "body.window[3].close" in response.json()["detail"]


def test_arrays_with_zero_volume_days_are_forecast(client: TestClient) -> None:
    arrays = [[row[column] for column in COLUMNS] for row in sample_rows(dated=False)]
    for row in arrays[::3]:
        row[-1] = 0.0
    response = client.post("/predict", json={"model": "tiny", "window": arrays})
    assert response.status_code == 200, response.text
    assert response.json()["forecast"][0]["close"] > 0


def test_answers_follow_the_documented_response_schemas(client: TestClient) -> None:
    rows = sample_rows()
    single = client.post("/predict", json={"model": "tiny-h5", "window": rows})
    assert single.status_code == 200, single.text
    parsed = PredictResponse.model_validate_json(single.content)
    assert parsed.model_dump(mode="json") == single.json()
    assert list(parsed.forecast[0].intervals) == ["80", "90", "95"]
    batch = client.post("/predict/batch", json={"model": "tiny-h5", "windows": [rows, rows]})
    assert batch.status_code == 200, batch.text
    parsed_batch = BatchPredictResponse.model_validate_json(batch.content)
    assert parsed_batch.model_dump(mode="json") == batch.json()
    # Same steps and dates; values agree to float32 precision (batch sizes differ).
    for batched, alone in zip(parsed_batch.forecasts[0], parsed.forecast, strict=True):
        assert (batched.step, batched.date) == (alone.step, alone.date)
        assert batched.close == pytest.approx(alone.close, rel=1e-5)
        assert batched.intervals["95"].upper == pytest.approx(alone.intervals["95"].upper, rel=1e-5)


def test_invalid_json_is_a_422_not_a_500(client: TestClient) -> None:
    response = client.post("/predict", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert "JSON" in response.json()["detail"]


def test_batch_errors_name_the_window(client: TestClient) -> None:
    response = client.post("/predict/batch", json={"model": "tiny", "windows": [sample_rows(), sample_rows(4)]})
    assert response.status_code == 422
    assert "windows[1]: expected 10 rows" in response.json()["detail"]


def test_forecast_dates_follow_the_exchange_calendar() -> None:
    from training.calendars import sessions_after

    friday, saturday = dt.date(2017, 11, 10), dt.date(2017, 11, 11)
    assert sessions_after(friday, 2) == [dt.date(2017, 11, 13), dt.date(2017, 11, 14)]
    assert sessions_after(saturday, 1) == [dt.date(2017, 11, 13)]
    christmas_eve = dt.date(2024, 12, 24)
    assert sessions_after(christmas_eve, 1, "XNYS") == [dt.date(2024, 12, 26)]
    assert sessions_after(christmas_eve, 1, "24/7") == [dt.date(2024, 12, 25)]
    # Independence Day, Thanksgiving, Good Friday and Juneteenth are not sessions either.
    assert sessions_after(dt.date(2024, 7, 3), 1, "XNYS") == [dt.date(2024, 7, 5)]
    assert sessions_after(dt.date(2024, 11, 27), 1, "XNYS") == [dt.date(2024, 11, 29)]
    assert sessions_after(dt.date(2024, 3, 28), 1, "XNYS") == [dt.date(2024, 4, 1)]
    assert sessions_after(dt.date(2024, 6, 18), 1, "XNYS") == [dt.date(2024, 6, 20)]
