"""What several test modules share: tiny configs, sample windows, settings, waiting and ports.

Test modules import helpers from here, never from one another.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import jsonschema
import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from training import features
from training.data import CleanResult, load_prices
from training.pipeline import TrainConfig

T = TypeVar("T")
DEADLINE_SECONDS = 240
LIVENESS_SECONDS = 60

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample" / "msft.csv"


WINDOW = 10


WINDOW_ROWS = [[1.0 + i * 0.01, 1.1 + i * 0.01, 0.9 + i * 0.01, 1.0 + i * 0.01, 1000.0] for i in range(10)]


COLUMNS = ("open", "high", "low", "close", "volume")


def tiny_clean(rows: int = 700) -> CleanResult:
    """The last `rows` days of the sample: enough for a split, quick to train on."""
    clean = load_prices(SAMPLE)
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
        # Fewer compiled batch shapes: each one costs an XLA compilation at load.
        "max_batch_size": 8,
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


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServiceProcess:
    """The real service (`uvicorn app.main:app`) in a subprocess on a free loopback port, serving a given store."""

    def __init__(self, models_dir: Path, home: Path, command: list[str] | None = None, **env: str) -> None:
        self.models_dir = models_dir
        self.home = home
        # `python -m app` runs uvicorn as production does (the loop it picks: uvloop); the default is uvicorn's CLI.
        self.command = command
        self.env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = home / f"service-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120) -> None:
        """Start the process and wait until GET /ready answers 200."""
        env = {
            **os.environ,
            "STOCKCAST_MODELS_DIR": str(self.models_dir),
            "STOCKCAST_DATA_DIR": str(self.home / "var"),
            "STOCKCAST_SAMPLE_DATA": str(SAMPLE),
            "STOCKCAST_BOOTSTRAP": "false",
            "STOCKCAST_MAX_BATCH_SIZE": "8",
            **self.env,
        }
        command = self.command or [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1"]
        if self.command is None:
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
            return httpx.get(f"{self.url}/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def log(self) -> str:
        """Everything the process has written to stdout and stderr so far."""
        return self.log_path.read_text(errors="replace")

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        """GET a path of the service."""
        return httpx.get(self.url + path, timeout=60, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        """POST to a path of the service."""
        return httpx.post(self.url + path, timeout=60, **kwargs)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def wait_until(check: Callable[[], Any], what: str, timeout: float = DEADLINE_SECONDS) -> Any:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def wait_job(client: TestClient, job_id: str, states: tuple[str, ...], timeout: float = 180) -> dict[str, Any]:
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
