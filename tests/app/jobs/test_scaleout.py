"""End to end, scaled out: 2 API processes and 2 queue workers on one PostgreSQL database.

Real processes, real HTTP, real tiny Keras models, a shared model store and
data folder. Six jobs for three models go in through both APIs; every job's
record and progress read the same from both; one queue worker is killed
with SIGKILL mid-job, its training process dies with it, and the job is
retried on the other queue worker and succeeds; both APIs then serve every new version.
The APIs poll the store only every 10 minutes here, so the new versions
reach them through LISTEN/NOTIFY. Run with `-s` to see the timeline.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    ROOT,
    SAMPLE,
    ServiceProcess,
    WorkerProcess,
    pid_alive,
    sample_rows,
    scratch_database,
    wait_until,
)

pytestmark = [pytest.mark.postgres, pytest.mark.e2e, pytest.mark.tf]

# A 400-day slice of the sample, uploaded through one API and read by every worker from the shared folder.
TINY = {"dataset": "small", "window": 10, "units": 4, "epochs": 1, "batch_size": 256, "backtest_folds": 0}
# Long enough to be killed mid-training (small batches: many steps per epoch), short enough to run again.
LONG = {**TINY, "epochs": 30, "patience": 30, "batch_size": 8}
STARTED = time.monotonic()


def say(message: str) -> None:
    """One line of the timeline (shown with -s)."""
    print(f"[{time.monotonic() - STARTED:6.1f} s] {message}", flush=True)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[list[ServiceProcess], list[WorkerProcess]]]:
    """Migrate a scratch database, then start two APIs and two workers on it and on one shared store."""
    with scratch_database(migrated=False) as url:
        env = {
            "STOCKCAST_DATABASE_URL": url,
            # Only NOTIFY can make an API see a new version within this test.
            "STOCKCAST_REFRESH_SECONDS": "600",
            "STOCKCAST_WORKER_HEARTBEAT_SECONDS": "1",
            "STOCKCAST_WORKER_STALLED_SECONDS": "4",
            "STOCKCAST_SWEEP_SECONDS": "1",
            "STOCKCAST_ABORT_POLL_SECONDS": "0.5",
            "STOCKCAST_JOB_MAX_ATTEMPTS": "2",
            "STOCKCAST_WORKER_CONCURRENCY": "2",
            # Every version is promoted, so the newest is the one each API must serve.
            "STOCKCAST_GATE_MAX_MASE": "1000",
            "STOCKCAST_GATE_COMPARE_WITH_CHAMPION": "false",
            "STOCKCAST_LOG_LEVEL": "warning",
            "TF_CPP_MIN_LOG_LEVEL": "2",
        }
        migrated = subprocess.run(
            [sys.executable, "-m", "app", "migrate"],
            cwd=ROOT,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert migrated.returncode == 0, migrated.stderr
        assert migrated.stdout.startswith("stockcast: applied ['0001 procrastinate 3.10.0 schema'"), migrated.stdout
        say(migrated.stdout.strip())
        models = tmp_path / "models"
        apis = [ServiceProcess(models, tmp_path, **env) for _ in range(2)]
        workers = [WorkerProcess(models, tmp_path, name, **env) for name in ("a", "b")]
        try:
            for worker in workers:
                worker.start()
            for api in apis:
                api.start(timeout=180)
            say(f"APIs on ports {[api.port for api in apis]}, workers pids {[worker.pid for worker in workers]}")
            yield apis, workers
        finally:
            for process in [*apis, *workers]:
                process.stop()
            for worker in workers:
                say(f"worker log tail ({worker.pid}): {worker.log_path.read_text(errors='replace')[-600:]!r}")


def job_on(api: ServiceProcess, job_id: str) -> dict[str, Any]:
    response = api.get(f"/jobs/{job_id}")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def submit(api: ServiceProcess, model: str, settings: dict[str, Any]) -> str:
    response = api.post("/train", json={"model": model, **settings})
    assert response.status_code == 202, response.text
    say(f"{model}: job {response.json()['job_id']} queued through the API on port {api.port}")
    return str(response.json()["job_id"])


def test_two_apis_two_workers_six_jobs_and_a_worker_killed_mid_job(
    cluster: tuple[list[ServiceProcess], list[WorkerProcess]],
) -> None:
    apis, workers = cluster
    lines = SAMPLE.read_bytes().splitlines(keepends=True)
    small = b"".join([lines[0], *lines[-400:]])
    uploaded = apis[1].post("/datasets", files={"file": ("small.csv", small, "text/csv")}, data={"name": "small"})
    assert uploaded.status_code == 201, uploaded.text
    first = {
        "m0": submit(apis[0], "m0", LONG),
        "m1": submit(apis[1], "m1", TINY),
        "m2": submit(apis[0], "m2", TINY),
    }

    # Progress of the long job, the same on both APIs while it trains.
    def training_seen_from_both() -> dict[str, Any] | None:
        seen = [job_on(api, first["m0"]) for api in apis]
        if all(job["status"] == "running" and (job["progress"] or {}).get("epoch", 0) >= 1 for job in seen):
            return seen[1]
        return None

    running = wait_until(training_seen_from_both, "m0's progress on both APIs", timeout=600)
    say(f"m0 progress seen from both APIs: epoch {running['progress']['epoch']} of {running['progress']['epochs']}")
    victim = next(worker for worker in workers if running["worker"].endswith(f":{worker.pid}"))
    survivor = next(worker for worker in workers if worker is not victim)
    children = victim.training_children()
    assert children, "the victim runs m0 in a training process"
    # Each worker runs up to two jobs: whatever else the victim ran is retried too.
    on_victim = {
        job_id
        for job_id in first.values()
        if (job := job_on(apis[0], job_id))["status"] == "running" and job["worker"].endswith(f":{victim.pid}")
    }
    victim.kill9()
    say(f"worker {victim.pid} killed with SIGKILL mid-job, running {sorted(on_victim)}; training processes {children}")
    wait_until(
        lambda: not any(pid_alive(child) for child in children), "the training processes to die with it", timeout=30
    )
    say("its training processes died with it (PR_SET_PDEATHSIG)")

    def retried() -> dict[str, Any] | None:
        job = job_on(apis[0], first["m0"])
        return job if job["attempts"] == 2 and job["status"] in ("running", "succeeded") else None

    retried_job = wait_until(retried, "the sweeper to retry m0 on the other worker", timeout=600)
    say(f"m0 retried: attempt {retried_job['attempts']} on worker {retried_job['worker']}")
    assert retried_job["worker"].endswith(f":{survivor.pid}")

    second: dict[str, str] = {}
    # Each model's second job goes through the other API than its first.
    other_api = {"m0": apis[1], "m1": apis[0], "m2": apis[1]}
    for model in ("m1", "m2", "m0"):
        # One job per model may wait: the second goes in once the first has left the queue (m0's once it
        # succeeded, so that the retry above never met a waiting job; that case is tested in test_postgres).
        leaving = ("succeeded",) if model == "m0" else ("running", "succeeded")
        wait_until(
            lambda model=model, leaving=leaving: job_on(apis[0], first[model])["status"] in leaving,  # type: ignore[misc]
            f"{model}'s first job to leave the queue",
            timeout=600,
        )
        second[model] = submit(other_api[model], model, TINY)
    for model, job_id in second.items():
        wait_until(lambda job_id=job_id: job_on(apis[1], job_id)["status"] == "succeeded", f"{model} v2", timeout=600)  # type: ignore[misc]

    every = [*first.values(), *second.values()]
    records = [{job_id: job_on(api, job_id) for job_id in every} for api in apis]
    assert records[0] == records[1]  # one source of truth, whichever replica answers
    assert first["m0"] in on_victim
    assert {job_id: (job["status"], job["attempts"]) for job_id, job in records[0].items()} == {
        job_id: ("succeeded", 2 if job_id in on_victim else 1) for job_id in every
    }
    assert records[0][first["m0"]]["result"]["version"] == 1
    say(f"all six jobs succeeded, read identically from both APIs; {sorted(on_victim)} took 2 attempts")

    # Both APIs serve every new version: v2 of each model, announced by NOTIFY (the APIs' own polling is off).
    # Which version is the *default* is the gate's call (no version here has evidence of skill, so the
    # one with the best ratio to naive serves), so the test asks every replica for v2 by number.
    # A replica answers for v2 only once its registry has heard of it (GET /models reads the disk instead).
    def serves_v2_everywhere() -> bool:
        return all(
            api.post("/predict", json={"model": model, "version": 2, "window": sample_rows()}).status_code == 200
            for api in apis
            for model in first
        )

    wait_until(serves_v2_everywhere, "both APIs to serve v2 of every model", timeout=300)
    for model in ("m0", "m1", "m2"):
        for api in apis:
            answer = api.post("/predict", json={"model": model, "version": 2, "window": sample_rows()})
            assert answer.status_code == 200, answer.text
            assert answer.json()["version"] == 2
        described = [api.get(f"/models/{model}").json() for api in apis]
        # Everything but `serving` (each replica's own batching counters) reads the same, the default included.
        assert [{**entry, "serving": None} for entry in described] == [{**described[0], "serving": None}] * 2
        assert described[0]["default_version"] in (1, 2)
    say("both APIs serve v2 of m0, m1 and m2, and describe every model identically")
