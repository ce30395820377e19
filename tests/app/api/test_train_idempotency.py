"""POST /train over HTTP: an Idempotency-Key makes a retry safe, and concurrent submissions respect the bound.

The app serves through the fake inference backend and its job runner is
stopped, so every accepted job stays queued where the test can count it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.helpers import queueing_client

REQUEST = {"model": "retried", "dataset": "msft", "epochs": 1}


@pytest.fixture
def queue_client(tmp_path: Path) -> Iterator[TestClient]:
    """Room for three waiting jobs, none of which starts."""
    with queueing_client(tmp_path / "models", tmp_path / "var", max_queued_jobs=3) as client:
        yield client


def test_a_retry_with_the_same_key_answers_the_first_job(queue_client: TestClient) -> None:
    # Finding 15: a client whose POST /train answer was lost could not retry without queueing a second job.
    headers = {"Idempotency-Key": "desk-2026-12-06-retried"}
    first = queue_client.post("/train", json=REQUEST, headers=headers)
    again = queue_client.post("/train", json=REQUEST, headers=headers)
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json() == first.json()
    assert "idempotent-replayed" not in first.headers and again.headers["idempotent-replayed"] == "true"
    assert len(queue_client.get("/jobs").json()["jobs"]) == 1
    other = queue_client.post("/train", json={**REQUEST, "epochs": 2}, headers=headers)
    assert other.status_code == 422
    assert other.json() == {
        "detail": "Idempotency-Key: this key came with a different training request before (model 'retried', "
        "dataset 'msft'); send a new key for a new request"
    }


def test_a_malformed_idempotency_key_is_refused(queue_client: TestClient) -> None:
    refused = queue_client.post("/train", json=REQUEST, headers={"Idempotency-Key": "x" * 256})
    assert refused.status_code == 422
    assert "idempotency-key" in refused.json()["detail"].lower()


def test_concurrent_submissions_queue_no_more_than_the_bound(queue_client: TestClient) -> None:
    # Finding 10: 24 concurrent POST /train with a bound of 3 left 7 queued.
    barrier = threading.Barrier(24)
    statuses: list[int] = []

    def submit(index: int) -> None:
        barrier.wait()
        statuses.append(queue_client.post("/train", json={**REQUEST, "model": f"m{index}"}).status_code)

    threads = [threading.Thread(target=submit, args=(index,)) for index in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(statuses) == [202] * 3 + [429] * 21
    assert len(queue_client.get("/jobs", params={"status": "queued"}).json()["jobs"]) == 3
