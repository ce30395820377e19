"""What several test modules share: tiny configs, sample windows, settings, waiting and ports.

Test modules import helpers from here, never from one another.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import datetime as dt
import functools
import http.server
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import jsonschema
import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from training import features
from training.config import TrainConfig
from training.data import CleanResult, load_prices

T = TypeVar("T")
DEADLINE_SECONDS = 240
LIVENESS_SECONDS = 60

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample" / "msft.csv"
# Serve like `python -m uvicorn app.main:app`, then list the modules the API process holds: argv = port, out file.
_SERVE_AND_LIST_MODULES = """
import signal
import sys
import uvicorn

def list_modules(*_):
    open(sys.argv[2], "w").write("\\n".join(sorted(sys.modules)))
    sys.exit(0)

# uvicorn restores this handler after its graceful shutdown and raises SIGTERM again.
signal.signal(signal.SIGTERM, list_modules)
uvicorn.run("app.main:app", host="127.0.0.1", port=int(sys.argv[1]))
list_modules()
"""


WINDOW = 10


WINDOW_ROWS = [[1.0 + i * 0.01, 1.1 + i * 0.01, 0.9 + i * 0.01, 1.0 + i * 0.01, 1000.0] for i in range(10)]


COLUMNS = ("open", "high", "low", "close", "volume")


# The rows the tiny models train on: enough for a split with window 40, small enough to train in seconds.
TINY_ROWS = 700


@functools.cache
def _sample_prices() -> CleanResult:
    """The sample, read and cleaned once per test process (about 50 ms of CPU a read; tests ask often)."""
    return load_prices(SAMPLE)


def tiny_clean(rows: int = TINY_ROWS) -> CleanResult:
    """The last `rows` days of the sample: enough for a split, quick to train on."""
    clean = copy.deepcopy(_sample_prices())
    clean.frame = clean.frame.iloc[-rows:].reset_index(drop=True)
    return clean


def tiny_config(**overrides: object) -> TrainConfig:
    """A model small enough to train in a second or two."""
    values: dict[str, object] = {"window": WINDOW, "units": 4, "epochs": 1, "batch_size": 64, "patience": 0}
    values.update(overrides)
    return TrainConfig(**values)  # type: ignore[arg-type]


def make_settings(store_root: Path, data_dir: Path, **overrides: object) -> Settings:
    """Settings for a test app: no bootstrap, fast polling."""
    values: dict[str, object] = {
        "models_dir": store_root,
        "data_dir": data_dir,
        "sample_data": SAMPLE,
        "bootstrap": False,
        "job_poll_seconds": 0.2,
        "refresh_seconds": 0.5,
        "max_batch_wait_us": 500,
        # Small batches: fewer shapes to warm up (and to compile where XLA is on).
        "max_batch_size": 8,
        # No XLA compilation in the background of every load; the tests of XLA ask for it.
        "inference_xla": False,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def sample_rows(count: int = WINDOW, dated: bool = True) -> list[dict[str, Any]]:
    """The last `count` days of the sample as request rows."""
    frame = tiny_clean().frame.iloc[-count:]
    rows = []
    for record in frame.to_dict("records"):
        row = {column: float(record[column]) for column in COLUMNS}
        if dated:
            row["date"] = record["date"].strftime("%Y-%m-%d")
        rows.append(row)
    return rows


# Datasets: rows as an append sends them, and a CSV of them as an upload sends it.
PRICE_HEADER = ("Date", "Open", "High", "Low", "Close", "Adj Close", "Volume")


def price_row(day: str, close: float = 100.0, volume: float = 1000.0) -> dict[str, Any]:
    """One day's row keyed by the upload's column names."""
    values = (day, close - 0.5, close + 1.0, close - 1.0, close, close, volume)
    return dict(zip(PRICE_HEADER, values, strict=True))


def price_csv(rows: list[dict[str, Any]]) -> bytes:
    """Rows as CSV bytes with the upload's header."""
    lines = [",".join(PRICE_HEADER), *(",".join(str(row[column]) for column in PRICE_HEADER) for row in rows)]
    return ("\n".join(lines) + "\n").encode()


def session_rows(first: str, count: int, close: float = 100.0) -> list[dict[str, Any]]:
    """`count` rows on the XNYS sessions from `first` on, the close rising by 1 a day."""
    import datetime as dt

    from training.calendars import sessions_after

    start = dt.date.fromisoformat(first)
    days = [start, *sessions_after(start, count - 1)]
    return [price_row(day.isoformat(), close + index) for index, day in enumerate(days)]


def walk_clean(dates: list[Any], volume: np.ndarray | None = None, seed: int = 0) -> CleanResult:
    """A calm geometric random walk on `dates`, as the cleaner leaves it; a zero volume repeats the last close."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    # Volumes vary around a million a day, as a traded stock's do; a zero stays a zero.
    traded = np.full(len(dates), 1e6) if volume is None else np.asarray(volume, dtype=float)
    volume = traded * rng.lognormal(0, 0.3, len(dates))
    steps = np.where(volume > 0, rng.normal(0, 0.01, len(dates)), 0.0)
    close = 100 * np.exp(np.cumsum(steps))
    frame = pd.DataFrame(
        {
            "date": pd.to_datetime(dates),
            "open": close,
            "high": close * np.where(volume > 0, 1.01, 1.0),
            "low": close * np.where(volume > 0, 0.99, 1.0),
            "close": close,
            "volume": volume,
        }
    )
    return CleanResult(frame=frame, rows_read=len(frame))


def every_day(clean: CleanResult) -> CleanResult:
    """The same rows dated on consecutive calendar days, ending on the same day: a 24/7 market's dates."""
    import pandas as pd

    frame = clean.frame.copy()
    frame["date"] = pd.date_range(end=frame["date"].iloc[-1], periods=len(frame))
    return CleanResult(frame=frame, rows_read=clean.rows_read)


def krx_clean(last: str = "2023-09-27", rows: int = 650, halts: tuple[int, ...] = ()) -> CleanResult:
    """A Samsung-like export: every weekday, with zero-volume rows on XKRX holidays and on the sessions `halts`.

    It ends the day before Chuseok 2023, so the next XKRX sessions skip four closed weekdays.
    """
    import pandas as pd

    from training.calendars import is_session

    days = pd.bdate_range(end=last, periods=rows)
    volume = np.where(is_session(days.to_numpy().astype("datetime64[D]"), "XKRX"), 1e6, 0.0)
    sessions = np.flatnonzero(volume > 0)
    volume[sessions[list(halts)]] = 0.0
    return walk_clean(list(days), volume)


def real_windows(spec: features.WindowSpec, count: int) -> np.ndarray:
    """`count` consecutive windows of the sample, in the raw units a client sends."""
    values = tiny_clean().frame[list(spec.features)].to_numpy(dtype=np.float64)
    inputs, _ = features.make_windows(values, spec)
    return np.ascontiguousarray(inputs[-count:])


def ar_returns_prices(count: int, phi: float, seed: int) -> np.ndarray:
    """Prices whose daily log returns follow an AR(1) with coefficient `phi`."""
    rng = np.random.default_rng(seed)
    shocks = rng.normal(scale=0.01, size=count)
    returns = np.zeros(count)
    for day in range(1, count):
        returns[day] = phi * returns[day - 1] + shocks[day]
    return 50 * np.exp(np.cumsum(returns))


# Ledger score rows ------------------------------------------------------------

FIRST_SESSION = "2024-01-01"


def session(index: int) -> str:
    """The ISO date of the `index`-th scored session of the hand-built ledgers (one calendar day apart)."""
    return (dt.date.fromisoformat(FIRST_SESSION) + dt.timedelta(days=index)).isoformat()


def score_row(
    origin: int,
    *,
    step: int = 1,
    actual: float = 101.0,
    forecast: float = 100.5,
    naive: float = 100.0,
    inside: dict[str, int] | None = None,
    model: str = "tiny",
    version: int = 1,
    served_as: str = "champion",
    replay: int = 0,
    split_suspect: int = 0,
    forecast_id: str | None = None,
) -> dict[str, Any]:
    """One `ledger_scores` row as scoring writes it: session `origin`, target `step` sessions later."""
    return {
        "forecast_id": forecast_id or f"{model}-{version}-{served_as}-{origin}",
        "step": step,
        "model": model,
        "version": version,
        "served_as": served_as,
        "dataset": "msft",
        "origin": session(origin),
        "target": session(origin + step),
        "replay": replay,
        "actual": actual,
        "forecast": forecast,
        "naive": naive,
        "log_error": math.log(actual / forecast),
        "naive_log_error": math.log(actual / naive),
        "inside": {"80": 1, "90": 1, "95": 1} if inside is None else inside,
        "scale": None,
        "split_suspect": split_suspect,
        "scored_at": "2024-12-31T00:00:00+00:00",
    }


def metadata_only_version(models_dir: Path, name: str, version: int, **fields: Any) -> Path:
    """A version folder with only a metadata.json (every required key, `fields` on top): enough for the
    store's listings and metadata reads, not for loading a network."""
    from training.store import FORMAT_VERSION, METADATA_FILE, REQUIRED_METADATA

    folder = models_dir / name / str(version)
    folder.mkdir(parents=True)
    metadata: dict[str, Any] = {key: {} for key in REQUIRED_METADATA}
    metadata.update(format_version=FORMAT_VERSION, name=name, version=version, **fields)
    (folder / METADATA_FILE).write_text(json.dumps(metadata))
    return folder


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def polling_client() -> httpx.Client:
    """An HTTP client for tests that call a service process many times (polling it, mostly).

    `httpx.get()` builds a new client, and with it an SSL context (about 25 ms
    of CPU), on every call. Without keep-alive, each request still opens its
    own connection, as `httpx.get()` does.
    """
    return httpx.Client(limits=httpx.Limits(max_keepalive_connections=0))


def terminate(process: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """SIGTERM a running process, then SIGKILL it if it has not exited within `timeout` seconds."""
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class ServiceProcess:
    """The real service (`uvicorn app.main:app`) in a subprocess on a free loopback port, serving a given store.

    With `modules_file`, the service writes the names in its `sys.modules`
    there when it stops (after SIGTERM), for tests of what the API process imports.
    """

    def __init__(
        self,
        models_dir: Path,
        home: Path,
        command: list[str] | None = None,
        modules_file: Path | None = None,
        **env: str,
    ) -> None:
        self.models_dir = models_dir
        self.home = home
        # `python -m app` runs uvicorn as production does (the loop it picks: uvloop); the default is uvicorn's CLI.
        self.command = command
        self.modules_file = modules_file
        self.env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = home / f"service-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.http = polling_client()

    def start(self, timeout: float = 120) -> None:
        """Start the process and wait until GET /ready answers 200."""
        env = {
            **os.environ,
            "STOCKCAST_MODELS_DIR": str(self.models_dir),
            "STOCKCAST_DATA_DIR": str(self.home / "var"),
            "STOCKCAST_SAMPLE_DATA": str(SAMPLE),
            "STOCKCAST_BOOTSTRAP": "false",
            "STOCKCAST_MAX_BATCH_SIZE": "8",
            # No XLA compilation behind every load, as in make_settings; the engine's tests cover XLA.
            "STOCKCAST_INFERENCE_XLA": "false",
            **self.env,
        }
        command = self.command or [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1"]
        if self.modules_file is not None:
            command = [sys.executable, "-c", _SERVE_AND_LIST_MODULES, str(self.port), str(self.modules_file)]
        elif self.command is None:
            command = [*command, "--port", str(self.port)]
        else:
            env["STOCKCAST_PORT"] = str(self.port)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_until(self._ready, "the service to become ready", timeout=timeout)

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            pytest.fail(f"service exited with {self.process.returncode}: {self.log_path.read_text()[-3000:]}")
        try:
            return self.http.get(f"{self.url}/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def log(self) -> str:
        """Everything the process has written to stdout and stderr so far."""
        return self.log_path.read_text(errors="replace")

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        """GET a path of the service."""
        return self.http.get(self.url + path, timeout=60, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        """POST to a path of the service."""
        return self.http.post(self.url + path, timeout=60, **kwargs)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        terminate(self.process, 30)

    def kill9(self) -> None:
        """SIGKILL: the API process dies at once, as in a crash."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Any request; a long timeout, for a report drawn on first request."""
        return self.http.request(method, self.url + path, timeout=120, **kwargs)


class WorkerProcess:
    """A real `python -m app.worker` process (scaled-out mode) on the given store, data folder and database."""

    def __init__(self, models_dir: Path, home: Path, name: str, **env: str) -> None:
        self.env = {
            **os.environ,
            "STOCKCAST_MODELS_DIR": str(models_dir),
            "STOCKCAST_DATA_DIR": str(home / "var"),
            "STOCKCAST_SAMPLE_DATA": str(SAMPLE),
            **env,
        }
        self.log_path = home / f"worker-{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the worker (it registers with the database within a second or two)."""
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app.worker"], cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )

    @property
    def pid(self) -> int:
        """The worker's process id."""
        assert self.process is not None
        return self.process.pid

    def training_children(self) -> list[int]:
        """Pids of the training processes this worker has spawned and that still run."""
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                comm = stat.read_text().split("(", 1)[1].rsplit(")", 1)[0]
                if int(fields[1]) == self.pid and comm == "stockcast-train":
                    children.append(int(stat.parent.name))
        return children

    def kill9(self) -> None:
        """SIGKILL, as a crashed machine or the OOM killer would."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM (running jobs finish), then SIGKILL if it lingers."""
        terminate(self.process, 60)


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists and is not a zombie."""
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def wait_until(check: Callable[[], Any], what: str, timeout: float = DEADLINE_SECONDS) -> Any:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def wait_job(
    client: TestClient | ServiceProcess, job_id: str, states: tuple[str, ...], timeout: float = 180
) -> dict[str, Any]:
    """Poll GET /jobs/{job_id} until its status is one of `states`."""

    def reached() -> dict[str, Any] | None:
        job: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
        return job if job["status"] in states else None

    return wait_until(reached, f"job {job_id} to reach {states}", timeout)


def run(awaitable: Awaitable[T]) -> T:
    """Run a coroutine on a fresh event loop, failing instead of hanging."""

    async def bounded() -> T:
        return await asyncio.wait_for(awaitable, LIVENESS_SECONDS)

    return asyncio.run(bounded())


def assert_documented(openapi: dict[str, Any], method: str, path: str, status: int, body: Any) -> None:
    """`body`, answered with `status` by `method path` (a path template), fits the schema OpenAPI documents for it."""
    operation = openapi["paths"][path][method.lower()]
    assert str(status) in operation["responses"], f"{method} {path} does not document {status}"
    content = operation["responses"][str(status)].get("content", {}).get("application/json", {})
    assert "schema" in content, f"{method} {path} documents no JSON schema for {status}"
    # OpenAPI 3.1 schemas are JSON Schema 2020-12; refs point into the document's components.
    schema = {**content["schema"], "components": openapi["components"]}
    jsonschema.validate(body, schema, cls=jsonschema.Draft202012Validator)


# PostgreSQL ------------------------------------------------------------------

# The server tests create scratch databases on; any database of it serves as the maintenance one.
POSTGRES_URL = os.environ.get("STOCKCAST_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
# Set by .ci/run: there, an unreachable server fails the tests instead of skipping them.
REQUIRE_POSTGRES = os.environ.get("STOCKCAST_REQUIRE_POSTGRES") == "1"


def postgres_unreachable() -> str | None:
    """Why the test server cannot be used, or None when it answers."""
    import psycopg

    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=3) as connection:
            connection.execute("SELECT 1")
    except psycopg.Error as error:
        return f"PostgreSQL at {POSTGRES_URL} is unreachable ({type(error).__name__}: {str(error).strip()})"
    return None


def require_postgres() -> None:
    """Skip the calling test (fail it under .ci/run) when PostgreSQL is unreachable, printing why."""
    reason = postgres_unreachable()
    if reason is None:
        return
    if REQUIRE_POSTGRES:
        pytest.fail(f"{reason}; .ci/run requires it")
    print(f"skipping: {reason}")
    pytest.skip(f"{reason}; set STOCKCAST_TEST_POSTGRES_URL or start one to run this test")


def url_of_database(name: str) -> str:
    """POSTGRES_URL with another database name."""
    return POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"


@contextlib.contextmanager
def scratch_database(migrated: bool = True) -> Iterator[str]:
    """A fresh database on the test server (migrated unless asked not to), dropped afterwards; yields its URL."""
    import psycopg

    require_postgres()
    name = f"stockcast_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    url = url_of_database(name)
    try:
        if migrated:
            from app.jobs.schema import migrate

            migrate(url)
        yield url
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
            connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


class TcpRelay:
    """A real TCP relay to the database that a test can cut and restore, to show what happens while it is down."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._server: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        """Accept connections and relay them to the target."""
        server = socket.create_server(("127.0.0.1", self.port))
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Refuse new connections and break the open ones, as a stopped database would."""
        if self._server is not None:
            # shutdown() first: close() alone leaves a blocked accept() listening.
            with contextlib.suppress(OSError):
                self._server.shutdown(socket.SHUT_RDWR)
            self._server.close()
            self._server = None
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._sockets.clear()


# Keyless services answer only requests addressed to a local name (DNS rebinding), so tests call them
# as a local client would, not as Starlette's default "testserver".
LOCAL_BASE_URL = "http://localhost"


def local_client(app: Any, **options: Any) -> TestClient:
    """A TestClient addressed to `localhost`, as a caller on this machine addresses the service."""
    return TestClient(app, base_url=LOCAL_BASE_URL, **options)


def store_with_a_third_version(source: Path, root: Path) -> Path:
    """A private copy of the store at `source` in `root`, with `tiny` v3: v2's files under another number."""
    from training.store import METADATA_FILE

    shutil.copytree(source, root)
    shutil.copytree(root / "tiny" / "2", root / "tiny" / "3")
    metadata = json.loads((root / "tiny" / "3" / METADATA_FILE).read_text())
    (root / "tiny" / "3" / METADATA_FILE).write_text(json.dumps({**metadata, "version": 3}))
    return root


@contextlib.contextmanager
def queueing_client(models_dir: Path, data_dir: Path, **settings: object) -> Iterator[TestClient]:
    """A started app (fake inference) whose job runner is stopped, so every accepted job stays queued."""
    from tests.fakes import fake_app

    with local_client(fake_app(models_dir, data_dir, **settings)) as client:
        assert client.portal is not None
        client.portal.call(client.app.state.jobs.runner.stop)  # type: ignore[attr-defined]
        yield client


# A proxy that misbehaves on purpose ---------------------------------------------


@dataclasses.dataclass(frozen=True)
class Fault:
    """What `FaultProxy` does with one matching request instead of forwarding it plainly.

    `status`: answer it with this status (and `Retry-After` if given), without forwarding;
    `lost`: forward it, then close the connection without answering (the service acted, the caller never hears);
    `stall`: never answer, until the proxy stops.
    """

    kind: str
    status: int = 0
    retry_after: str | None = None

    @classmethod
    def answer(cls, status: int, retry_after: str | None = None) -> Fault:
        """Answer with `status` and a JSON detail, as the service's own refusals look."""
        return cls("status", status, retry_after)


LOST = Fault("lost")
STALL = Fault("stall")


@dataclasses.dataclass(frozen=True)
class Arrival:
    """One request the proxy received: when (monotonic seconds), what, and what it did."""

    at: float
    method: str
    path: str
    outcome: str
    headers: dict[str, str]


class FaultProxy:
    """A real HTTP proxy on a loopback port in front of a service: it forwards every request, except that the
    first requests matching a method and path prefix get the faults queued for them (`inject`), in order.

    Every arrival is recorded (`arrivals`), so a test can count the attempts a client made and measure the
    waits between them.
    """

    def __init__(self, target: str) -> None:
        self.target = target
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.arrivals: list[Arrival] = []
        self._faults: list[tuple[str, str, list[Fault]]] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._upstream = httpx.Client(base_url=target, timeout=120)
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), self._handler_class())
        self._server.daemon_threads = True

    def inject(self, method: str, path_prefix: str, *faults: Fault) -> None:
        """Apply `faults`, one each, to the next requests whose method and path (query left out) match."""
        with self._lock:
            self._faults.append((method, path_prefix, list(faults)))

    def arrivals_of(self, method: str, path_prefix: str) -> list[Arrival]:
        """The recorded arrivals of a method and path prefix, in order."""
        with self._lock:
            return [item for item in self.arrivals if item.method == method and item.path.startswith(path_prefix)]

    def start(self) -> None:
        """Serve in a background thread."""
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        """Stop serving; stalled requests are released and their connections closed."""
        self._stopped.set()
        self._server.shutdown()
        self._server.server_close()
        self._upstream.close()

    def _fault_for(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for wanted_method, prefix, faults in self._faults:
                if wanted_method == method and path.startswith(prefix) and faults:
                    return faults.pop(0)
        return None

    def _record(self, method: str, path: str, outcome: str, headers: dict[str, str]) -> None:
        with self._lock:
            self.arrivals.append(Arrival(time.monotonic(), method, path, outcome, headers))

    def _handler_class(self) -> type[http.server.BaseHTTPRequestHandler]:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the arrivals are the log."""

            def _serve(self) -> None:
                path = self.path.partition("?")[0]
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {name.lower(): value for name, value in self.headers.items()}
                fault = proxy._fault_for(self.command, path)
                proxy._record(self.command, path, fault.kind if fault else "forwarded", headers)
                if fault is not None and fault.kind == "status":
                    self._answer(fault.status, {"detail": f"injected {fault.status}"}, fault.retry_after)
                    return
                if fault is not None and fault.kind == "stall":
                    proxy._stopped.wait(120)
                    self._drop()
                    return
                sent = {k: v for k, v in headers.items() if k not in ("host", "connection", "content-length")}
                answer = proxy._upstream.request(self.command, self.path, headers=sent, content=body)
                if fault is not None and fault.kind == "lost":
                    self._drop()
                    return
                self.send_response(answer.status_code)
                for name, value in answer.headers.items():
                    if name.lower() not in ("content-length", "transfer-encoding", "connection", "date", "server"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            def _answer(self, status: int, body: dict[str, Any], retry_after: str | None) -> None:
                content = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                if retry_after is not None:
                    self.send_header("Retry-After", retry_after)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def _drop(self) -> None:
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)

            do_GET = do_POST = do_PUT = do_DELETE = _serve  # noqa: N815 (http.server's names)

        return Handler


def strip_onnx_export(version_dir: Path) -> None:
    """Make a stored version look trained before ONNX exports: no model.onnx, no "onnx" block, no hash of it."""
    (version_dir / "model.onnx").unlink()
    metadata_file = version_dir / "metadata.json"
    metadata = json.loads(metadata_file.read_text())
    del metadata["onnx"], metadata["files"]["model.onnx"]
    metadata_file.write_text(json.dumps(metadata))
