"""The store on a shared folder vs on S3 (SeaweedFS): how soon both API replicas serve a job's version,
and what a 20 s outage of the S3 server does to /predict and to writes.

Each backend gets a fresh PostgreSQL database, two uvicorn API replicas and
one queue worker. Folder: one models/ and var/ for all three. S3: `weed mini`
on loopback and a data folder per process (no shared folder). The APIs'
own polling is off (600 s), so a version reaches them through NOTIFY, and
with S3 each replica downloads and checks the version before loading it.
Measured per job: from the job's `finished_at` (written by the worker just
before its NOTIFY) to the moment both replicas' /ready report the version
served. The ratio is S3's median over the folder's, in the same run.

Then, on the S3 setup only, the S3 server is stopped for `--outage-seconds`
while a client keeps calling /predict: the answers by status, their latency
against the same client's before the outage, writes (alias moves) refused
with 503, and the seconds from the server's restart to the first write
accepted again (no service restarted).

    python bench/object_store.py [--jobs 3] [--outage-seconds 20] [--json OUT]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness import add_json_option, write_json  # noqa: E402 (after the repository joins sys.path)

SAMPLE = ROOT / "data" / "sample" / "msft.csv"
JOB = {"dataset": "small", "window": 10, "units": 4, "epochs": 1, "batch_size": 256, "backtest_folds": 0}
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret", "AWS_REGION": "us-east-1"}


def free_port() -> int:
    """A free loopback port below 50000 (weed derives its gRPC ports by adding 10000)."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port < 50000:
            return port


def call(method: str, url: str, body: Any = None, timeout: float = 30) -> tuple[int, Any]:
    """One JSON request: (status, parsed body); (0, reason) when nothing answered."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, parsed(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, parsed(error.read())
    except OSError as error:
        return 0, str(error)


def parsed(body: bytes) -> Any:
    """JSON when it is (the service's answers), else the text (an S3 server's XML)."""
    try:
        return json.loads(body or b"null")
    except ValueError:
        return body.decode(errors="replace")


def wait_for(check: Any, what: str, timeout: float = 300, pause: float = 0.02) -> Any:
    """Poll `check` until truthy; RuntimeError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(pause)
    raise RuntimeError(f"timed out waiting for {what}")


class Weed:
    """`weed mini` with a bucket, on loopback ports that stay the same across a stop and a start."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.ports = {name: free_port() for name in ("s3", "master", "volume", "filer", "admin")}
        self.grpc = {name: free_port() for name in ("s3", "master", "volume", "filer", "admin")}
        self.endpoint = f"http://127.0.0.1:{self.ports['s3']}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start and wait until the bucket answers."""
        weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
        command = [weed, "mini", f"-dir={self.folder}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-bucket=stockcast"]
        command += [f"-{name}.port={port}" for name, port in self.ports.items()]
        command += [f"-{name}.port.grpc={port}" for name, port in self.grpc.items()]
        command += ["-s3.port.iceberg=0", "-s3.port.lance=0", "-admin.ui=false", "-webdav=false"]
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / "weed.log", "ab") as log:
            self.process = subprocess.Popen(command, env={**os.environ, **CREDENTIALS}, stdout=log, stderr=log)
        wait_for(lambda: call("GET", f"{self.endpoint}/stockcast", timeout=1)[0] in (200, 403), "weed", pause=0.1)

    def stop(self) -> None:
        """SIGTERM and wait."""
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)


class Cluster:
    """A database, two API replicas and a queue worker on one backend (`folder` or `s3`)."""

    def __init__(self, backend: str, home: Path, database_url: str, weed: Weed | None) -> None:
        self.backend, self.home, self.database_url = backend, home, database_url
        self.processes: list[subprocess.Popen[bytes]] = []
        self.apis: list[str] = []
        self.env = {
            **os.environ,
            "STOCKCAST_DATABASE_URL": database_url,
            "STOCKCAST_REFRESH_SECONDS": "600",
            "STOCKCAST_BOOTSTRAP": "false",
            "STOCKCAST_SAMPLE_DATA": str(SAMPLE),
            "STOCKCAST_GATE_MAX_MASE": "1000",
            "STOCKCAST_GATE_COMPARE_WITH_CHAMPION": "false",
            "STOCKCAST_INFERENCE_XLA": "false",
            "STOCKCAST_LOG_LEVEL": "warning",
            "TF_CPP_MIN_LOG_LEVEL": "3",
            "PYTHONPATH": str(ROOT),
        }
        if weed is not None:
            self.env |= {**CREDENTIALS, "AWS_ENDPOINT_URL": weed.endpoint, "STOCKCAST_STORE_URL": "s3://stockcast/b"}

    def _folders(self, label: str) -> dict[str, str]:
        # Folder: one store and data folder for all; S3: each process its own (no shared folder).
        base = self.home / ("shared" if self.backend == "folder" else label)
        return {"STOCKCAST_MODELS_DIR": str(base / "models"), "STOCKCAST_DATA_DIR": str(base / "var")}

    def start(self) -> None:
        """Migrate, start the worker and both APIs, wait until both are ready."""
        subprocess.run(
            [sys.executable, "-m", "app", "migrate"], cwd=ROOT, env=self.env, check=True, capture_output=True
        )
        log = open(self.home / f"{self.backend}.log", "ab")  # noqa: SIM115 - closed with the processes
        worker_env = {**self.env, **self._folders("worker")}
        self.processes.append(
            subprocess.Popen([sys.executable, "-m", "app.worker"], cwd=ROOT, env=worker_env, stdout=log, stderr=log)
        )
        for index in range(2):
            port = free_port()
            command = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port)]
            env = {**self.env, **self._folders(f"api{index}")}
            self.processes.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log))
            self.apis.append(f"http://127.0.0.1:{port}")
        for api in self.apis:
            wait_for(lambda api=api: call("GET", f"{api}/ready", timeout=2)[0] == 200, f"{api} ready", pause=0.2)

    def stop(self) -> None:
        """SIGTERM every process and wait."""
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()

    def served(self, model: str) -> list[int | None]:
        """The version each replica serves of `model`."""
        return [(call("GET", f"{api}/ready", timeout=5)[1] or {}).get("models", {}).get(model) for api in self.apis]


def upload_dataset(api: str) -> None:
    """The sample's last 400 rows as dataset `small`, through one API (multipart, as a client sends it)."""
    lines = SAMPLE.read_bytes().splitlines(keepends=True)
    content = b"".join([lines[0], *lines[-400:]])
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="name"\r\n\r\nsmall\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="small.csv"\r\n'
            "Content-Type: text/csv\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        f"{api}/datasets",
        data=body,
        method="POST",
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        assert answer.status == 201


def propagation(cluster: Cluster, jobs: int) -> list[float]:
    """Seconds from each job's end to both replicas serving its version, one job at a time."""
    upload_dataset(cluster.apis[1])
    delays = []
    for index in range(jobs):
        model = f"p{index}"
        status, accepted = call("POST", f"{cluster.apis[0]}/train", {"model": model, **JOB})
        assert status == 202, accepted
        job_id = accepted["job_id"]
        job = wait_for(
            lambda job_id=job_id: (
                (record := call("GET", f"{cluster.apis[0]}/jobs/{job_id}")[1])["status"] == "succeeded" and record
            ),
            f"job {job_id}",
            timeout=600,
            pause=0.2,
        )
        version = job["result"]["version"]
        wait_for(
            lambda model=model, version=version: cluster.served(model) == [version, version],
            f"{model} v{version} on both replicas",
        )
        both = dt.datetime.now(dt.UTC)
        delays.append((both - dt.datetime.fromisoformat(job["finished_at"])).total_seconds())
        print(f"  {cluster.backend}: {model} v{version} on both replicas {delays[-1]:.2f} s after its job ended")
    return delays


def outage(cluster: Cluster, weed: Weed, seconds: float) -> dict[str, Any]:
    """Stop the S3 server for `seconds` under /predict traffic; what the client and the writes saw."""
    api = cluster.apis[0]
    served = cluster.served("p0")[0]
    length = int(JOB["window"])
    header, *lines = SAMPLE.read_text().splitlines()
    columns = [name.strip().lower() for name in header.split(",")]
    window = []
    for line in lines[-length:]:
        record = dict(zip(columns, line.split(","), strict=True))
        window.append({key: float(record[key]) for key in ("open", "high", "low", "close", "volume")})
    body = {"model": "p0", "window": window}
    latencies: dict[str, list[float]] = {"before": [], "during": []}
    answers: Counter[int] = Counter()
    phase = {"name": "before"}
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            status, _ = call("POST", f"{api}/predict", body)
            elapsed = time.perf_counter() - started
            if phase["name"] in latencies:
                latencies[phase["name"]].append(elapsed)
            if phase["name"] == "during":
                answers[status] += 1

    client = threading.Thread(target=traffic)
    client.start()
    time.sleep(3)
    weed.stop()
    phase["name"] = "during"
    refused: Counter[int] = Counter()
    ready_store = str(call("GET", f"{api}/ready")[1].get("store"))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status, _ = call("PUT", f"{api}/models/p0/aliases/challenger", {"version": served})
        refused[status] += 1
        time.sleep(1)
    phase["name"] = "after"
    weed.start()
    restarted = time.monotonic()
    wait_for(
        lambda: call("PUT", f"{api}/models/p0/aliases/challenger", {"version": served})[0] == 200,
        "a write after the restart",
        timeout=120,
        pause=0.1,
    )
    back = time.monotonic() - restarted
    stop.set()
    client.join()
    return {
        "outage_seconds": seconds,
        "predict_answers_during": dict(answers),
        "predict_p50_ms": {key: 1000 * statistics.median(values) for key, values in latencies.items() if values},
        "predict_p99_ms": {
            key: 1000 * statistics.quantiles(values, n=100)[98] for key, values in latencies.items() if len(values) > 2
        },
        "alias_moves_during": dict(refused),
        "ready_store_during": ready_store,
        "seconds_from_restart_to_first_write": back,
    }


def scratch_database(maintenance_url: str) -> str:
    """A new empty database beside `maintenance_url`'s."""
    import psycopg

    name = f"stockcast_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(maintenance_url, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return maintenance_url.rsplit("/", 1)[0] + f"/{name}"


def drop_database(maintenance_url: str, url: str) -> None:
    """Drop a database made by `scratch_database`."""
    import psycopg

    with psycopg.connect(maintenance_url, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")


def main() -> int:
    """Both backends' propagation delays, then the outage on S3; print the figures and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=3, help="jobs per backend, one model each")
    parser.add_argument("--outage-seconds", type=float, default=20.0, help="how long the S3 server is stopped")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("STOCKCAST_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"),
        help="any database of the server; scratch databases are created beside it and dropped",
    )
    add_json_option(parser)
    arguments = parser.parse_args()
    print(f"command: python bench/object_store.py --jobs {arguments.jobs} --outage-seconds {arguments.outage_seconds}")
    print(f"machine: {os.cpu_count()} CPU cores (shared with whatever else runs)")
    delays: dict[str, list[float]] = {}
    figures: dict[str, Any] = {}
    for backend in ("folder", "s3"):
        with tempfile.TemporaryDirectory(prefix=f"stockcast-bench-{backend}-") as folder:
            home = Path(folder)
            url = scratch_database(arguments.database_url)
            weed = Weed(home / "weed") if backend == "s3" else None
            cluster = Cluster(backend, home, url, weed)
            try:
                if weed is not None:
                    weed.start()
                cluster.start()
                delays[backend] = propagation(cluster, arguments.jobs)
                if weed is not None:
                    figures["outage"] = outage(cluster, weed, arguments.outage_seconds)
            finally:
                cluster.stop()
                if weed is not None:
                    weed.stop()
                drop_database(arguments.database_url, url)
    print("\n| store | job end -> both replicas serve (median s) | max s |\n|---|---|---|")
    for backend, values in delays.items():
        print(f"| {backend} | {statistics.median(values):.2f} | {max(values):.2f} |")
    ratio = statistics.median(delays["s3"]) / statistics.median(delays["folder"])
    print(f"\nratio S3 / folder (median): {ratio:.2f}x")
    print(f"\noutage: {json.dumps(figures['outage'], indent=2)}")
    write_json(arguments.json, sys.argv, {"delays_seconds": delays, "ratio_s3_to_folder": ratio, **figures})
    return 0


if __name__ == "__main__":
    sys.exit(main())
