"""What `Client` sends again, and what it never sends twice, against the real service behind a proxy that fails
on purpose (`tests.helpers.FaultProxy`: 503 and 429 answers with Retry-After, answers lost after the service
acted, requests never answered); and the deadline and the naive fallback, with the service stopped.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from itertools import pairwise

import numpy as np
import pandas as pd
import pytest
from stockcast_client import (
    CLIENT_FALLBACK,
    Client,
    ConnectionFailedError,
    DeadlineExceededError,
    ServiceUnavailableError,
)

from tests.client.conftest import KeyedService, start_keyed_service
from tests.helpers import LOST, STALL, Fault, FaultProxy, tiny_clean
from training.store import ModelStore

pytestmark = [pytest.mark.e2e, pytest.mark.tf]

NEW_DAY = {"Date": "2017-11-13", "Open": 83.66, "High": 83.94, "Low": 83.46, "Close": 83.93, "Volume": 14197535}


@pytest.fixture
def proxy(service: KeyedService) -> Iterator[FaultProxy]:
    running = FaultProxy(service.url)
    running.start()
    yield running
    running.stop()


@pytest.fixture
def client(proxy: FaultProxy, service: KeyedService) -> Iterator[Client]:
    with Client(proxy.url, service.admin_key) as admin:
        yield admin


def prices_csv(rows: int = 700) -> bytes:
    """The sample's last rows as an upload's CSV."""
    frame = tiny_clean(rows).frame.rename(columns=str.title)
    return frame.to_csv(index=False, date_format="%Y-%m-%d").encode()


def test_a_forecast_waits_out_503s_as_retry_after_asks(client: Client, proxy: FaultProxy, prices: pd.DataFrame) -> None:
    proxy.inject("POST", "/predict", Fault.answer(503, "1"), Fault.answer(503, "1"))

    forecast = client.forecast("tiny", prices)

    arrivals = proxy.arrivals_of("POST", "/predict")
    assert [arrival.outcome for arrival in arrivals] == ["status", "status", "forwarded"]
    assert all(later.at - earlier.at >= 1.0 for earlier, later in pairwise(arrivals))
    # Every attempt of one call carries the same request id, so the service's log lines of all of them match.
    assert len({arrival.headers["x-request-id"] for arrival in arrivals}) == 1
    assert forecast.served_as == "champion" and forecast.request_id == arrivals[0].headers["x-request-id"]


def test_a_429_is_waited_out_even_for_an_upload(client: Client, proxy: FaultProxy) -> None:
    proxy.inject("POST", "/datasets", Fault.answer(429, "2"))

    stored = client.upload_dataset("after-429", prices_csv())

    arrivals = proxy.arrivals_of("POST", "/datasets")
    assert [arrival.outcome for arrival in arrivals] == ["status", "forwarded"]
    assert arrivals[1].at - arrivals[0].at >= 2.0
    assert stored.rows == 700


def test_without_retry_after_the_waits_double(service: KeyedService, proxy: FaultProxy, prices: pd.DataFrame) -> None:
    proxy.inject("GET", "/models/tiny", *[Fault.answer(503)] * 3)

    with Client(proxy.url, service.predict_key, backoff_seconds=0.2) as client:
        client.model("tiny")

    arrivals = proxy.arrivals_of("GET", "/models/tiny")
    waits = [later.at - earlier.at for earlier, later in pairwise(arrivals)]
    assert len(waits) == 3
    # Half of each wait is fixed: at least 0.1, 0.2 and 0.4 s.
    assert all(wait >= 0.1 * 2**index for index, wait in enumerate(waits))


def test_train_is_queued_once_when_its_answer_is_lost(client: Client, proxy: FaultProxy) -> None:
    client.upload_dataset("lost-train", prices_csv())
    proxy.inject("POST", "/train", LOST)

    job = client.train("lost", "lost-train", window=10, units=4, epochs=500, patience=500)

    posts = proxy.arrivals_of("POST", "/train")
    assert [post.outcome for post in posts] == ["lost", "forwarded"]
    assert posts[0].headers["idempotency-key"] == posts[1].headers["idempotency-key"] == job.idempotency_key
    assert job.replayed
    assert [record.id for record in client.jobs() if record.model == "lost"] == [job.id]

    proxy.inject("DELETE", "/jobs/", LOST)
    cancelled = job.cancel()
    assert len(proxy.arrivals_of("DELETE", "/jobs/")) == 1
    assert cancelled.cancel_requested or cancelled.status == "cancelled"


def test_an_append_whose_answer_is_lost_is_sent_again_and_changes_nothing(client: Client, proxy: FaultProxy) -> None:
    proxy.inject("POST", "/datasets/msft/rows", LOST)

    result = client.append_rows("msft", NEW_DAY)

    assert [post.outcome for post in proxy.arrivals_of("POST", "/datasets/msft/rows")] == ["lost", "forwarded"]
    # The answer is the second attempt's: the first one added the row.
    assert (result.rows_added, result.unchanged, result.last_date) == (0, 1, dt.date(2017, 11, 13))
    assert client.dataset("msft").end == dt.date(2017, 11, 13)


def test_set_alias_whose_answer_is_lost_is_read_not_sent_twice(client: Client, proxy: FaultProxy) -> None:
    proxy.inject("PUT", "/models/tiny/aliases/", LOST)

    update = client.set_alias("tiny", "canary", 2, reason="lost answer")

    assert len(proxy.arrivals_of("PUT", "/models/tiny/aliases/")) == 1
    assert len(proxy.arrivals_of("GET", "/models/tiny/aliases")) == 1
    assert update.aliases == {"champion": 1, "canary": 2}
    assert (update.change["alias"], update.change["to"], update.change["reason"]) == ("canary", 2, "lost answer")


def test_an_upload_whose_answer_is_lost_is_read_not_sent_twice(client: Client, proxy: FaultProxy) -> None:
    proxy.inject("POST", "/datasets", LOST)

    stored = client.upload_dataset("lost-upload", prices_csv())

    assert len(proxy.arrivals_of("POST", "/datasets")) == 1
    assert (stored.name, stored.rows) == ("lost-upload", 700)


def test_an_upload_refused_with_503_is_sent_again_once_nothing_has_the_name(client: Client, proxy: FaultProxy) -> None:
    proxy.inject("POST", "/datasets", Fault.answer(503))

    stored = client.upload_dataset("after-503", prices_csv())

    assert [post.outcome for post in proxy.arrivals_of("POST", "/datasets")] == ["status", "forwarded"]
    assert stored.rows == 700


def test_an_overwrite_is_never_sent_twice_when_it_cannot_be_told_whether_it_landed(
    client: Client, proxy: FaultProxy
) -> None:
    first = client.upload_dataset("kept", prices_csv())
    proxy.inject("POST", "/datasets", Fault.answer(503))

    with pytest.raises(ServiceUnavailableError) as refused:
        client.upload_dataset("kept", prices_csv(699), overwrite=True)

    assert (refused.value.status, refused.value.detail) == (503, "injected 503")
    assert refused.value.request_id == proxy.arrivals_of("POST", "/datasets")[-1].headers["x-request-id"]
    assert len(proxy.arrivals_of("POST", "/datasets")) == 2  # the first upload, and the refused overwrite once
    assert client.dataset("kept").sha256 == first.sha256


def test_the_deadline_bounds_a_call_the_service_never_answers(
    service: KeyedService, proxy: FaultProxy, prices: pd.DataFrame
) -> None:
    proxy.inject("POST", "/predict", *[STALL] * 4)
    with Client(proxy.url, service.predict_key, deadline=1.5) as client:
        client.model("tiny")
        started = time.monotonic()
        with pytest.raises(DeadlineExceededError) as late:
            client.forecast("tiny", prices)
        waited = time.monotonic() - started

    assert isinstance(late.value.last_error, ConnectionFailedError) and late.value.last_error.sent
    assert len(proxy.arrivals_of("POST", "/predict")) == 1
    # A liveness bound, not a speed test: without a deadline the call would wait on the stalled request.
    assert waited < 30
    with Client(proxy.url, service.predict_key, deadline=1.5, on_unavailable="naive") as client:
        fallback = client.forecast("tiny", prices)
    assert (fallback.served_as, fallback.points, fallback.version) == (CLIENT_FALLBACK, [83.87], None)
    assert "no answer within the deadline of 1.5 s" in (fallback.fallback_reason or "")


def test_the_naive_fallback_answers_once_the_service_is_stopped(
    model_store: ModelStore, tmp_path_factory: pytest.TempPathFactory, prices: pd.DataFrame
) -> None:
    stopped = start_keyed_service(model_store, tmp_path_factory)
    with Client(stopped.url, stopped.predict_key, on_unavailable="naive", deadline=1.0) as client:
        live = client.forecast("tiny-h5", prices)
        stopped.process.stop()
        fallback = client.forecast("tiny-h5", prices)
        many = client.forecast_many("tiny-h5", [prices.iloc[:-1], prices])

    assert live.served_as == "unpromoted" and len(live.steps) == 5
    # The horizon and the label come from the model's description read while it was up.
    assert fallback.is_fallback and fallback.points == [83.87] * 5
    assert [step.date for step in fallback.steps] == [None] * 5 and fallback.skill is None
    assert [forecast.points for forecast in many] == [[84.09] * 5, [83.87] * 5]

    with Client(stopped.url, stopped.predict_key, on_unavailable="naive", deadline=1.0) as unaware:
        # Never described: a frame still names its close, for one step; arrays cannot say which column it is.
        assert unaware.forecast("tiny-h5", prices).points == [83.87]
        with pytest.raises(DeadlineExceededError) as unreachable:
            unaware.forecast("tiny-h5", np.ones((10, 5)))
    assert isinstance(unreachable.value.last_error, ConnectionFailedError)
    assert not unreachable.value.last_error.sent
