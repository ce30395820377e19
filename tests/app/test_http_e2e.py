"""The main path over real HTTP against a real uvicorn process, and kill -9 recovery.

Upload a dataset -> train -> poll the job -> the version appears in /models
-> /predict answers with it, without a restart. Then the server is killed
while a job trains and started again: the job ends failed with a reason, no
worker lingers, no partial version exists, earlier versions still serve.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ServiceProcess, free_port, tiny_clean, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.tf]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServiceProcess]:
    running = ServiceProcess(
        tmp_path / "models", tmp_path, STOCKCAST_JOB_POLL_SECONDS="0.2", STOCKCAST_REFRESH_SECONDS="1"
    )
    running.start()
    yield running
    running.stop()


def yahoo_csv(rows: int = 700, scale: float = 1.0) -> bytes:
    """A Yahoo-style export (Adj Close, null holiday rows) built from the sample's last rows."""
    frame = tiny_clean(rows).frame
    out = io.StringIO()
    out.write("Date,Open,High,Low,Close,Adj Close,Volume\n")
    for index, record in enumerate(frame.to_dict("records")):
        day = record["date"].strftime("%Y-%m-%d")
        if index % 97 == 50:
            out.write(f"{day},null,null,null,null,null,null\n")
            continue
        prices = [record[column] * scale for column in ("open", "high", "low", "close", "close")]
        out.write(day + "," + ",".join(f"{value:.4f}" for value in prices) + f",{int(record['volume'])}\n")
    return out.getvalue().encode()


def train_and_wait(server: ServiceProcess, body: dict[str, Any]) -> dict[str, Any]:
    accepted = server.post("/train", json=body)
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]

    def finished() -> dict[str, Any] | None:
        job = server.get(f"/jobs/{job_id}").json()
        return job if job["status"] in ("succeeded", "failed", "cancelled") else None

    return wait_until(finished, f"job {job_id} to finish")


def window_rows(count: int, scale: float = 1.0) -> list[dict[str, Any]]:
    frame = tiny_clean().frame.iloc[-count:]
    return [
        {
            "date": record["date"].strftime("%Y-%m-%d"),
            **{column: float(record[column]) * scale for column in ("open", "high", "low", "close")},
            "volume": float(record["volume"]),
        }
        for record in frame.to_dict("records")
    ]


def test_upload_train_poll_and_predict_without_restart(server: ServiceProcess) -> None:
    upload = server.post(
        "/datasets", files={"file": ("krw.csv", yahoo_csv(scale=700.0), "text/csv")}, data={"name": "krw"}
    )
    assert upload.status_code == 201, upload.text
    report = upload.json()
    assert report["rows_dropped"]["missing_values"] == 7  # the null holiday rows, counted
    assert report["rows_kept"] == 693

    bad = server.post(
        "/datasets", files={"file": ("x.csv", b"Date,Open\n2020-01-01,abc\n", "text/csv")}, data={"name": "bad"}
    )
    assert bad.status_code == 422 and "missing column" in bad.json()["detail"]

    job = train_and_wait(
        server, {"model": "krw", "dataset": "krw", "architecture": "gru", "window": 10, "units": 4, "epochs": 2}
    )
    assert job["status"] == "succeeded", job
    assert job["result"]["version"] == 1
    assert job["progress"]["epoch"] >= 1 and job["progress"]["epochs"] == 2

    def listed() -> bool:
        models = server.get("/models").json()["models"]
        return any(model["name"] == "krw" and model["default_version"] == 1 for model in models)

    wait_until(listed, "the new version to be served")
    window = window_rows(10, scale=700.0)
    response = server.post("/predict", json={"model": "krw", "window": window})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["version"] == 1
    last = window[-1]["close"]
    assert 0.8 * last < body["forecast"][0]["close"] < 1.2 * last  # KRW-sized prices, KRW-sized forecast


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "State:\tZ" not in status.read_text()


def test_kill_9_during_training_settles_the_job_and_keeps_serving(server: ServiceProcess) -> None:
    # A version to keep serving; its backtest and refit are not the point (the main path above runs them).
    quick = {"window": 10, "units": 4, "epochs": 1, "backtest_folds": 0, "production_refit": False}
    first = train_and_wait(server, {"model": "msft", "dataset": "msft", **quick})
    assert first["status"] == "succeeded", first

    # A long job: many epochs on the full sample, early stopping disabled.
    accepted = server.post(
        "/train",
        json={"model": "msft", "dataset": "msft", "window": 20, "units": 32, "epochs": 500, "patience": 500},
    )
    job_id = accepted.json()["job_id"]
    running = wait_until(
        lambda: (
            (job := server.get(f"/jobs/{job_id}").json())["status"] == "running"
            and (job.get("progress") or {}).get("epoch", 0) >= 1
            and job
        ),
        "the long job to finish an epoch",
    )
    assert running["status"] == "running"
    server.kill9()

    # The worker dies with its parent (PR_SET_PDEATHSIG); find it by the job record.
    import sqlite3

    with sqlite3.connect(server.home / "var" / "jobs.sqlite3") as connection:
        worker_pid = connection.execute("SELECT pid FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]
    assert worker_pid
    wait_until(lambda: not _alive(worker_pid), "the orphaned worker to exit", timeout=30)

    server.port = free_port()
    server.url = f"http://127.0.0.1:{server.port}"
    server.start()
    job = server.get(f"/jobs/{job_id}").json()
    assert job["status"] == "failed"
    assert "interrupted" in job["error"]
    model_dir = server.home / "models" / "msft"
    assert sorted(path.name for path in model_dir.iterdir() if path.is_dir()) == ["1"]  # no partial version
    response = server.post("/predict", json={"model": "msft", "window": window_rows(10)})
    assert response.status_code == 200 and response.json()["version"] == 1
