"""The object store goes away under load and comes back: a real uvicorn service on a real S3 server (moto).

While the store is down, /predict keeps answering from the loaded version,
/ready stays ready and says the store is unreachable, and writes (an alias
move, a training job) answer 503 with the reason. When the store is back,
everything works again without a restart: writes succeed and a version
published meanwhile is served.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import ServiceProcess, sample_rows, wait_until
from tests.s3 import S3Server
from training.remote_store import open_model_store
from training.store import ModelStore

pytestmark = [pytest.mark.e2e, pytest.mark.tf]

# Long enough for several refreshes of the registry and many requests to fail over; bench/store_outage.py
# holds the store down for 20 s.
OUTAGE_SECONDS = float(os.environ.get("STOCKCAST_TEST_OUTAGE_SECONDS", "3"))


def publish(source: ModelStore, target: ModelStore, name: str, version: int) -> int:
    """Store a copy of `source`'s version in `target` (a new number there); the number it got."""
    folder = source.version_dir(name, version)
    metadata = source.read_metadata(name, version)

    def copy(into: Path) -> None:
        for path in folder.iterdir():
            if path.is_file() and path.name != "metadata.json":
                (into / path.name).write_bytes(path.read_bytes())

    return target.save_version(name, copy, {key: value for key, value in metadata.items() if key != "files"})


@pytest.fixture
def service(model_store: ModelStore, s3_server: S3Server, s3_url: str, tmp_path: Path) -> Iterator[ServiceProcess]:
    publisher = open_model_store(tmp_path / "publisher", s3_url)
    assert publish(model_store, publisher, "tiny", 1) == 1
    running = ServiceProcess(
        tmp_path / "cache",
        tmp_path,
        STOCKCAST_STORE_URL=s3_url,
        STOCKCAST_REFRESH_SECONDS="0.5",
        **s3_server.environment(),
    )
    running.start()
    yield running
    running.stop()


def test_predictions_survive_a_store_outage_and_writes_resume_after_it(
    service: ServiceProcess, s3_server: S3Server, s3_url: str, model_store: ModelStore, tmp_path: Path
) -> None:
    body = {"model": "tiny", "window": sample_rows()}
    assert service.post("/predict", json=body).status_code == 200
    assert service.get("/ready").json()["store"] == "reachable"

    answers: Counter[int] = Counter()
    stop = threading.Event()

    def load() -> None:
        with httpx.Client() as client:
            while not stop.is_set():
                answers[client.post(f"{service.url}/predict", json=body, timeout=30).status_code] += 1

    traffic = threading.Thread(target=load)
    traffic.start()
    s3_server.stop()
    try:
        # /ready reports the verdict of the store's latest request (the registry polls it every 0.5 s here).
        ready = wait_until(
            lambda: "is unreachable" in str((answer := service.get("/ready")).json().get("store")) and answer,
            "/ready to report the store unreachable",
        )
        assert ready.status_code == 200, ready.text
        moved = service.request("PUT", "/models/tiny/aliases/champion", json={"version": 1})
        assert moved.status_code == 503 and "retry later" in moved.json()["detail"], moved.text
        queued = service.post("/train", json={"model": "tiny", "dataset": "msft", "window": 10, "epochs": 1})
        assert queued.status_code == 503 and "is unreachable" in queued.json()["detail"], queued.text
        time.sleep(OUTAGE_SECONDS)  # the outage itself: traffic keeps flowing meanwhile
    finally:
        s3_server.start()
        stop.set()
        traffic.join(timeout=60)
    assert answers[200] > 0 and set(answers) == {200}, answers

    # Back without a restart: writes work, and a version published by another machine is served.
    wait_until(lambda: service.get("/ready").json()["store"] == "reachable", "the store to answer again")
    moved = service.request("PUT", "/models/tiny/aliases/challenger", json={"version": 1})
    assert moved.status_code == 200, moved.text
    publisher = open_model_store(tmp_path / "publisher-2", s3_url)
    assert publish(model_store, publisher, "tiny", 2) == 2
    publisher.set_alias("tiny", "champion", 2, reason="published during the test")
    wait_until(lambda: service.get("/ready").json()["models"].get("tiny") == 2, "v2 to be served")
    answer = service.post("/predict", json=body)
    assert answer.status_code == 200 and answer.json()["version"] == 2, answer.text
