"""End to end, scaled out with no shared folder: 2 APIs and 2 queue workers, each on its own data folder,
one SeaweedFS server (`weed mini`) as the store and the real PostgreSQL as the queue.

A dataset uploaded through one API is trained on by a worker; both APIs
serve the version (told by NOTIFY: their own polling is off). A second job
is stalled on its manifest, by a proxy between the workers and the store,
after its files are uploaded; its worker is killed with SIGKILL there. No
version becomes visible; the job's retry on the other worker stores v1,
and a sweep deletes the dead writer's files. Run with `-s` for the timeline.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.app.jobs.test_scaleout import TINY, job_on, say, submit
from tests.helpers import (
    ROOT,
    SAMPLE,
    STALL,
    FaultProxy,
    ServiceProcess,
    WorkerProcess,
    sample_rows,
    scratch_database,
    wait_until,
)
from tests.s3 import SeaweedServer
from training.object_store import ObjectStore
from training.remote_store import RemoteModelStore

pytestmark = [pytest.mark.postgres, pytest.mark.e2e, pytest.mark.tf]

PREFIX = "scaleout"
URL = f"s3://{SeaweedServer.BUCKET}/{PREFIX}"


@pytest.fixture
def cluster(
    tmp_path: Path, seaweed: SeaweedServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[list[ServiceProcess], list[WorkerProcess], FaultProxy]]:
    """Two APIs straight on the store, two workers through a proxy to it; five data folders in all, none shared."""
    for key, value in seaweed.environment().items():
        monkeypatch.setenv(key, value)
    proxy = FaultProxy(seaweed.endpoint)
    proxy.start()
    with scratch_database(migrated=False) as url:
        env = {
            "STOCKCAST_DATABASE_URL": url,
            "STOCKCAST_STORE_URL": URL,
            "STOCKCAST_REFRESH_SECONDS": "600",
            "STOCKCAST_WORKER_HEARTBEAT_SECONDS": "1",
            "STOCKCAST_WORKER_STALLED_SECONDS": "4",
            "STOCKCAST_SWEEP_SECONDS": "1",
            "STOCKCAST_JOB_MAX_ATTEMPTS": "2",
            "STOCKCAST_GATE_MAX_MASE": "1000",
            "STOCKCAST_GATE_COMPARE_WITH_CHAMPION": "false",
            "STOCKCAST_LOG_LEVEL": "warning",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            **seaweed.environment(),
        }
        migrated = subprocess.run(
            [sys.executable, "-m", "app", "migrate"],
            cwd=ROOT,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
        )
        assert migrated.returncode == 0, migrated.stderr
        apis = [ServiceProcess(tmp_path / f"api{n}" / "models", tmp_path / f"api{n}", **env) for n in range(2)]
        through_proxy = {**env, "AWS_ENDPOINT_URL": proxy.url}
        workers = [
            WorkerProcess(tmp_path / f"worker-{name}" / "models", tmp_path / f"worker-{name}", name, **through_proxy)
            for name in ("a", "b")
        ]
        for folder in [tmp_path / f"api{n}" for n in range(2)] + [tmp_path / f"worker-{n}" for n in "ab"]:
            folder.mkdir()
        try:
            for worker in workers:
                worker.start()
            for api in apis:
                api.start(timeout=180)
            yield apis, workers, proxy
        finally:
            for process in [*apis, *workers]:
                process.stop()
            proxy.stop()


def test_no_shared_folder_jobs_serve_everywhere_and_a_killed_upload_stays_invisible(
    cluster: tuple[list[ServiceProcess], list[WorkerProcess], FaultProxy], tmp_path: Path
) -> None:
    apis, workers, proxy = cluster
    store = RemoteModelStore(tmp_path / "observer", ObjectStore(URL))
    lines = SAMPLE.read_bytes().splitlines(keepends=True)
    small = b"".join([lines[0], *lines[-400:]])
    uploaded = apis[1].post("/datasets", files={"file": ("small.csv", small, "text/csv")}, data={"name": "small"})
    assert uploaded.status_code == 201, uploaded.text

    # A job trained by whichever worker takes it is served by both APIs.
    first = submit(apis[0], "m1", TINY)
    wait_until(lambda: job_on(apis[1], first)["status"] == "succeeded", "m1's job", timeout=600)
    wait_until(
        lambda: all(api.get("/ready").json()["models"].get("m1") == 1 for api in apis), "both APIs to serve m1 v1"
    )
    for api in apis:
        answer = api.post("/predict", json={"model": "m1", "window": sample_rows()})
        assert answer.status_code == 200 and answer.json()["version"] == 1, answer.text
    say("m1 v1, trained on one worker, is served by both APIs")

    # The next job's manifest is held by the proxy: its files are all uploaded, and its worker dies there.
    manifests = f"/{SeaweedServer.BUCKET}/{PREFIX}/models/doomed/versions/"
    proxy.inject("PUT", manifests, STALL)
    doomed = submit(apis[1], "doomed", TINY)
    wait_until(lambda: proxy.arrivals_of("PUT", manifests), "the doomed job's manifest write", timeout=600)
    holder = job_on(apis[0], doomed)["worker"]
    victim = next(worker for worker in workers if holder.endswith(f":{worker.pid}"))
    victim.kill9()
    say(f"worker {victim.pid} killed with SIGKILL before its manifest landed")
    assert store.versions("doomed") == []
    orphans = {item.key for item in store.objects.listing("models/doomed/uploads/")}
    assert orphans, "the killed worker's files were uploaded"

    job = wait_until(
        lambda: (record := job_on(apis[0], doomed))["status"] in ("succeeded", "failed") and record,
        "the retry",
        timeout=600,
    )
    assert (job["status"], job["attempts"], (job["result"] or {}).get("version")) == ("succeeded", 2, 1), job
    assert store.versions("doomed") == [1]
    wait_until(lambda: all(api.get("/ready").json()["models"].get("doomed") == 1 for api in apis), "doomed v1 served")
    swept = set(store.sweep_uploads(older_than_seconds=0))
    assert swept == orphans
    metadata = store.read_metadata("doomed", 1)
    assert store.verified_model_path("doomed", 1, metadata).is_file()
    say(f"the retry stored v1; the sweep deleted the dead writer's {len(swept)} file(s)")
