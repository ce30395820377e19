"""`Client` against the real service (uvicorn, the real inference process, tiny real models): every method.

Forecasts are checked against what the service answers a plain HTTP request for the same rows.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from stockcast_client import (
    CLIENT_FALLBACK,
    Client,
    ConflictError,
    ForbiddenError,
    JobRecord,
    NotFoundError,
    UnauthorizedError,
    UnprocessableEntityError,
)

from tests.client.conftest import BATCH_LIMIT, KeyedService
from tests.helpers import FaultProxy, tiny_clean, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.tf]

FEATURES = ["Open", "High", "Low", "Close", "Volume"]
LAST_DAY = dt.date(2017, 11, 10)


@pytest.fixture
def client(service: KeyedService) -> Iterator[Client]:
    with Client(service.url, service.admin_key) as admin:
        yield admin


def plain_predict(service: KeyedService, frame: pd.DataFrame, **selector: Any) -> dict[str, Any]:
    """The service's answer to a hand-written /predict request with the frame's last 10 rows as dated rows."""
    rows = [
        {"date": row["Date"].strftime("%Y-%m-%d"), **{column.lower(): float(row[column]) for column in FEATURES}}
        for row in frame.iloc[-10:].to_dict("records")
    ]
    answer = httpx.post(
        service.url + "/predict",
        json={"model": "tiny", "window": rows, **selector},
        headers={"Authorization": f"Bearer {service.predict_key}"},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_a_frame_in_any_column_case_and_order_is_forecast_from_its_last_rows(
    client: Client, service: KeyedService, prices: pd.DataFrame
) -> None:
    frame = prices.iloc[-50:][["Date", "Volume", "Close", "Low", "High", "Open", "OpenInt"]]
    frame.columns = ["DATE", "volume", "Close", "LOW", "high", "Open", "OpenInt"]

    forecast = client.forecast("tiny", frame)

    expected = plain_predict(service, prices)
    assert (forecast.model, forecast.version, forecast.served_as) == ("tiny", 1, "champion")
    assert forecast.forecast_id == expected["forecast_id"]
    assert forecast.last_value == expected["last_value"] == 83.87
    assert forecast.in_sample is False and forecast.scorable
    assert forecast.skill is not None and forecast.skill.trained_through == LAST_DAY
    # The fixture's champion alias was set by hand: no gate verdict, so no beats_naive.
    assert (forecast.skill.promoted_by, forecast.skill.beats_naive) == ("manual", False)
    (step,) = forecast.steps
    assert step.date == dt.date(2017, 11, 13)
    assert step.close == expected["forecast"][0]["close"]
    assert {level: (band.lower, band.upper) for level, band in step.bands.items()} == {
        level: (band["lower"], band["upper"]) for level, band in expected["forecast"][0]["intervals"].items()
    }
    assert forecast.request_id


def test_an_array_and_rows_get_the_frames_forecast(client: Client, prices: pd.DataFrame) -> None:
    from_frame = client.forecast("tiny", prices)
    array = prices[FEATURES].to_numpy()[-25:]
    rows = prices.iloc[-12:].to_dict("records")

    from_array = client.forecast("tiny", array, last_date=LAST_DAY)
    from_rows = client.forecast("tiny", rows)

    assert from_array.forecast_id == from_rows.forecast_id == from_frame.forecast_id
    assert from_array.points == from_rows.points == from_frame.points
    undated = client.forecast("tiny", array)
    assert undated.steps[0].date is None and not undated.scorable


def test_to_frame_has_a_row_per_step_and_a_band_per_level(client: Client, prices: pd.DataFrame) -> None:
    forecast = client.forecast("tiny-h5", prices)

    frame = forecast.to_frame()

    assert list(frame.columns) == [
        "step", "date", "close", "lower_80", "upper_80", "lower_90", "upper_90", "lower_95", "upper_95"
    ]  # fmt: skip
    assert frame["step"].tolist() == [1, 2, 3, 4, 5]
    assert frame["date"].tolist()[0] == dt.date(2017, 11, 13) and frame["date"].tolist()[-1] == dt.date(2017, 11, 17)
    assert (frame["lower_95"] <= frame["lower_80"]).all() and (frame["upper_80"] <= frame["upper_95"]).all()
    assert frame.attrs == {
        "model": "tiny-h5",
        "version": 1,
        "forecast_id": forecast.forecast_id,
        "served_as": "unpromoted",
    }


def test_version_and_alias_select_what_serves(client: Client, service: KeyedService, prices: pd.DataFrame) -> None:
    pinned = client.forecast("tiny", prices, version=2)
    champion = client.forecast("tiny", prices, alias="champion")

    assert (pinned.version, pinned.served_as) == (2, "pinned")
    assert pinned.forecast_id == plain_predict(service, prices, version=2)["forecast_id"]
    assert champion.version == 1


def test_forecast_many_finds_the_batch_limit_and_keeps_under_it(service: KeyedService, prices: pd.DataFrame) -> None:
    proxy = FaultProxy(service.url)
    proxy.start()
    windows = [prices.iloc[: len(prices) - back] for back in range(6, -1, -1)]
    try:
        with Client(proxy.url, service.predict_key) as client:
            forecasts = client.forecast_many("tiny", windows)
            again = client.forecast_many("tiny", windows)
            singles = [client.forecast("tiny", window) for window in windows]
    finally:
        proxy.stop()

    batches = proxy.arrivals_of("POST", "/predict/batch")
    # The first request of 7 windows is refused (422 naming the limit of 3); then 3 + 3 + 1, and 3 + 3 + 1 again.
    assert len(batches) == 1 + 3 + 3
    assert [f.forecast_id for f in forecasts] == [f.forecast_id for f in again] == [f.forecast_id for f in singles]
    # A batch runs the network on another batch shape: float32 rounding differs in the last digits.
    assert [f.points for f in forecasts] == [pytest.approx(f.points, rel=1e-6) for f in singles]
    assert [f.last_value for f in forecasts] == [f.last_value for f in singles]
    assert [f.steps[0].date for f in forecasts][-2:] == [LAST_DAY, dt.date(2017, 11, 13)]
    stacked = np.stack([window[FEATURES].to_numpy()[-10:] for window in windows])
    undated = Client(service.url, service.predict_key).forecast_many("tiny", stacked)
    assert [f.points for f in undated] == [pytest.approx(f.points, rel=1e-6) for f in forecasts]
    assert len(windows) > BATCH_LIMIT


def test_models_model_and_monitoring(client: Client) -> None:
    models = {info.name: info for info in client.models()}
    tiny = client.model("tiny")
    monitoring = client.monitoring("tiny")

    assert {"tiny", "tiny-h5"} <= set(models)
    assert (tiny.default_version, tiny.champion, tiny.aliases) == (1, 1, {"champion": 1})
    assert [version.version for version in tiny.versions] == [1, 2]
    first = tiny.version_info(1)
    assert first is not None
    assert (first.window, first.horizon, first.label) == (10, 1, "close")
    assert first.features == ("open", "high", "low", "close", "volume")
    assert monitoring.model == "tiny" and monitoring.served_version == 1
    assert monitoring.status in ("ok", "insufficient_data", "coverage_breach", "skill_lost")


def test_set_alias_moves_what_is_served(client: Client, service: KeyedService, prices: pd.DataFrame) -> None:
    logged_before = len(alias_log(service))
    try:
        update = client.set_alias("tiny", "champion", 2, reason="client test")

        assert update.aliases == {"champion": 2}
        assert (update.change["from"], update.change["to"], update.change["by"]) == (1, 2, "ops")
        served = client.forecast("tiny", prices)
        assert (served.version, served.served_as) == (2, "champion")
    finally:
        client.set_alias("tiny", "champion", 1, reason="client test: back")
    assert len(alias_log(service)) == logged_before + 2
    assert client.forecast("tiny", prices).version == 1


def alias_log(service: KeyedService) -> list[dict[str, Any]]:
    """The alias log of `tiny`, read with plain HTTP (the client has no method for it)."""
    answer = httpx.get(
        service.url + "/models/tiny/aliases", headers={"Authorization": f"Bearer {service.admin_key}"}, timeout=60
    )
    log: list[dict[str, Any]] = answer.json()["log"]
    return log


def test_append_rows_scores_the_forecast_it_completes_and_a_repeat_changes_nothing(
    client: Client, prices: pd.DataFrame
) -> None:
    forecast = client.forecast("tiny", prices)
    assert forecast.scorable and forecast.steps[0].date == dt.date(2017, 11, 13)
    new_day = pd.DataFrame(
        [
            {
                "Date": pd.Timestamp("2017-11-13"),
                "Open": 83.66,
                "High": 83.94,
                "Low": 83.46,
                "Close": 83.93,
                "Volume": 14197535,
            }
        ]
    )

    added = client.append_rows("msft", new_day)
    repeated = client.append_rows("msft", new_day)

    assert (added.rows_added, added.added_dates, added.last_date) == (
        1,
        (dt.date(2017, 11, 13),),
        dt.date(2017, 11, 13),
    )
    assert added.scoring == "done" and (added.scored_forecasts or 0) >= 1
    assert (repeated.rows_added, repeated.unchanged, repeated.sha256) == (0, 1, added.sha256)
    with pytest.raises(ConflictError) as conflict:
        client.append_rows(
            "msft",
            {"Date": "2017-11-13", "Open": 83.66, "High": 83.94, "Low": 83.46, "Close": 90.0, "Volume": 14197535},
        )
    assert conflict.value.status == 409 and "2017-11-13" in conflict.value.detail
    monitoring = client.monitoring("tiny")
    champion = next(group for group in monitoring.groups if (group.version, group.served_as) == (1, "champion"))
    assert champion.live_sessions >= 1 and champion.windows["since_live"].sessions >= 1


def test_upload_dataset_from_a_frame_bytes_and_a_path(client: Client, tmp_path: Path) -> None:
    frame = tiny_clean().frame.set_index("date")[["open", "high", "low", "close", "volume"]]
    frame.columns = ["Open", "High", "Low", "Close", "Volume"]

    stored = client.upload_dataset("desk-upload", frame)

    assert (stored.name, stored.rows, stored.end) == ("desk-upload", 700, LAST_DAY)
    assert client.dataset("desk-upload").sha256 == stored.sha256
    with pytest.raises(ConflictError) as clash:
        client.upload_dataset("desk-upload", frame)
    assert clash.value.detail == "dataset 'desk-upload' exists; send overwrite=true to replace it"
    content = frame.iloc[:-1].to_csv(index_label="Date").encode()
    replaced = client.upload_dataset("desk-upload", content, overwrite=True)
    assert (replaced.rows, replaced.sha256) == (699, hashlib.sha256(content).hexdigest())
    path = tmp_path / "prices.csv"
    path.write_bytes(content)
    assert client.upload_dataset("desk-path", path).raw["filename"] == "prices.csv"
    assert {"desk-upload", "desk-path", "msft"} <= {dataset.name for dataset in client.datasets()}


def test_train_waits_with_progress_and_cancel_stops_a_job(client: Client, prices: pd.DataFrame) -> None:
    frame = tiny_clean().frame.rename(columns=str.title)
    client.upload_dataset("desk-train", frame)
    settings = {"window": 10, "units": 4, "epochs": 2}

    job = client.train("desk", "desk-train", idempotency_key="desk-v1", **settings)
    repeat = client.train("desk", "desk-train", idempotency_key="desk-v1", **settings)
    seen: list[JobRecord] = []
    record = job.wait(timeout=240, progress=seen.append, poll_seconds=0.2)

    assert repeat.id == job.id and repeat.replayed and not job.replayed
    assert (record.status, record.version) == ("succeeded", 1)
    assert seen[-1] == record and any(item.status == "running" for item in seen)
    assert seen[-1].progress is not None and seen[-1].progress["epochs"] == 2
    assert client.forecast("desk", prices).version == 1
    assert client.job(job.id).status == "succeeded"

    long = client.train("desk", "desk-train", window=10, units=4, epochs=500, patience=500)
    cancelled = long.cancel()
    assert cancelled.cancel_requested or cancelled.status == "cancelled"
    assert long.wait(timeout=120, poll_seconds=0.2).status == "cancelled"
    assert [item.id for item in client.jobs(limit=2)] == [long.id, job.id]


def test_errors_carry_the_detail_status_and_request_id(
    client: Client, service: KeyedService, prices: pd.DataFrame
) -> None:
    with pytest.raises(NotFoundError) as unknown:
        client.model("nope")
    assert unknown.value.status == 404 and unknown.value.detail.startswith("unknown model 'nope'")
    request_id = unknown.value.request_id
    logged = f"[{request_id}] GET /models/{{name}} 404"
    assert request_id and wait_until(lambda: logged in service.process.log(), "its access log line", timeout=30)

    zero = prices.copy()
    zero.loc[zero.index[-1], "Close"] = 0.0
    with pytest.raises(UnprocessableEntityError) as malformed:
        client.forecast("tiny", zero)
    assert malformed.value.status == 422
    assert malformed.value.detail == "window[9].close: prices must be positive, got 0.0"

    gap = prices.copy()
    gap.loc[gap.index[-3], "High"] = float("nan")
    with pytest.raises(ValueError, match=r"window row 7 \(2017-11-08\): high must be a finite number"):
        client.forecast("tiny", gap)
    with pytest.raises(ValueError, match="the model takes 10 rows, oldest first; got 4"):
        client.forecast("tiny", prices.iloc[-4:])

    with Client(service.url, service.predict_key) as desk, pytest.raises(ForbiddenError) as forbidden:
        desk.set_alias("tiny", "champion", 1)
    assert forbidden.value.status == 403
    with Client(service.url, "not-a-key") as stranger, pytest.raises(UnauthorizedError):
        stranger.models()


def test_the_url_and_key_come_from_the_environment(
    service: KeyedService, prices: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STOCKCAST_URL", service.url + "/")
    monkeypatch.setenv("STOCKCAST_API_KEY", service.predict_key)

    with Client() as client:
        assert client.base_url == service.url
        assert client.forecast("tiny", prices).served_as != CLIENT_FALLBACK
        with pytest.raises(ForbiddenError):
            client.set_alias("tiny", "champion", 1)
