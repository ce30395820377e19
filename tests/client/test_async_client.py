"""`AsyncClient` against the real service: 32 forecasts at once, every method, a retry and the naive fallback.

It runs the same flows as `Client` (`stockcast_client.operations`); these tests show that its I/O drives
them the same way, concurrently.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import pandas as pd
import pytest
from stockcast_client import CLIENT_FALLBACK, AsyncClient, Client, ConflictError, JobRecord, NotFoundError

from tests.client.conftest import KeyedService
from tests.helpers import STALL, Fault, FaultProxy, run, tiny_clean

pytestmark = [pytest.mark.e2e, pytest.mark.tf]


def test_32_concurrent_forecasts_are_each_the_one_their_window_gets_alone(
    service: KeyedService, prices: pd.DataFrame
) -> None:
    windows = [prices.iloc[: len(prices) - back] for back in range(32)]

    async def forecast_all() -> list[list[object]]:
        async with AsyncClient(service.url, service.predict_key) as client:
            forecasts = await asyncio.gather(*(client.forecast("tiny", window) for window in windows))
        return [[f.forecast_id, f.steps[0].date, f.last_value, f.points, f.served_as] for f in forecasts]

    concurrent = run(forecast_all())

    with Client(service.url, service.predict_key) as client:
        alone = [client.forecast("tiny", window) for window in windows]
    assert [row[0] for row in concurrent] == [f.forecast_id for f in alone]
    assert len({row[0] for row in concurrent}) == 32
    assert [row[1:3] for row in concurrent] == [[f.steps[0].date, f.last_value] for f in alone]
    # Served in micro-batches of whatever arrived together: float32 rounding may differ in the last digits.
    assert [row[3] for row in concurrent] == [pytest.approx(f.points, rel=1e-6) for f in alone]
    assert {row[4] for row in concurrent} == {"champion"}


def test_every_method(service: KeyedService, prices: pd.DataFrame) -> None:
    upload = tiny_clean().frame.rename(columns=str.title).to_csv(index=False, date_format="%Y-%m-%d").encode()
    new_day = {"Date": "2017-11-13", "Open": 83.66, "High": 83.94, "Low": 83.46, "Close": 83.93, "Volume": 14197535}
    seen: list[JobRecord] = []

    async def walk() -> None:
        async with AsyncClient(service.url, service.admin_key) as client:
            forecast = await client.forecast("tiny", prices)
            assert forecast.version == 1 and forecast.steps[0].date == dt.date(2017, 11, 13)
            many = await client.forecast_many("tiny", [prices.iloc[:-1], prices])
            assert [f.last_value for f in many] == [84.09, 83.87]
            assert {"tiny", "tiny-h5"} <= {info.name for info in await client.models()}
            assert (await client.model("tiny")).default_version == 1
            assert (await client.monitoring("tiny")).model == "tiny"
            alias = await client.set_alias("tiny", "canary", 2, reason="async test")
            assert alias.aliases == {"champion": 1, "canary": 2}
            appended = await client.append_rows("msft", new_day)
            assert (appended.rows_added, appended.scoring) == (1, "done")

            stored = await client.upload_dataset("async-set", upload)
            assert stored.rows == 700
            with pytest.raises(ConflictError):
                await client.upload_dataset("async-set", upload)
            assert "async-set" in {dataset.name for dataset in await client.datasets()}
            assert (await client.dataset("async-set")).sha256 == stored.sha256

            job = await client.train("async", "async-set", window=10, units=4, epochs=1)
            trained = await job.wait(timeout=240, progress=seen.append, poll_seconds=0.2)
            assert (trained.status, trained.version, seen[-1].status) == ("succeeded", 1, "succeeded")
            assert (await client.forecast("async", prices)).version == 1
            long = await client.train("async", "async-set", window=10, units=4, epochs=500, patience=500)
            await long.cancel()
            assert (await long.wait(timeout=120, poll_seconds=0.2)).status == "cancelled"
            assert (await client.job(job.id)).status == "succeeded"
            assert [record.id for record in await client.jobs(limit=2)] == [long.id, job.id]
            with pytest.raises(NotFoundError) as unknown:
                await client.model("nope")
            assert unknown.value.detail.startswith("unknown model 'nope'")

    # Not `run`: the walk trains a real network, longer than its liveness bound.
    asyncio.run(asyncio.wait_for(walk(), 300))


def test_a_retry_and_the_fallback(service: KeyedService, prices: pd.DataFrame) -> None:
    proxy = FaultProxy(service.url)
    proxy.start()
    proxy.inject("POST", "/predict", Fault.answer(503, "1"))

    async def twice() -> tuple[str, str]:
        async with AsyncClient(proxy.url, service.predict_key, deadline=4.0, on_unavailable="naive") as client:
            retried = await client.forecast("tiny", prices)
            proxy.inject("POST", "/predict", STALL)
            fallback = await client.forecast("tiny", prices, deadline=1.0)
        return retried.served_as, fallback.served_as

    try:
        served = run(twice())
    finally:
        proxy.stop()

    assert served == ("champion", CLIENT_FALLBACK)
    assert [arrival.outcome for arrival in proxy.arrivals_of("POST", "/predict")] == ["status", "forwarded", "stall"]
