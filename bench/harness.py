"""What the benchmarks share: `--json OUT`, the wrk runner, /proc figures, a server handle.

Scenarios live in their own scripts (`bench/README.md` lists them); this
module holds no scenario. Every script takes `--json OUT` through
`add_json_option` and writes its figures with `write_json`, beside what it
prints. The server tools are Linux only (/proc) and need wrk (Debian:
`apt-get install -y wrk`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_model import REPOSITORY, SAMPLE

from app.inference.serve_loop import INFERENCE_PROCESS_NAME
from app.jobs.training_process import TRAINING_PROCESS_NAME

# Every server logs the same way: warnings only, no access log.
QUIET_UVICORN = ("--log-level", "warning", "--no-access-log")

WRK_SCRIPT = r"""
-- POST the body in $BENCH_BODY (of type $BENCH_CONTENT_TYPE; a binary V2 request also
-- sends $BENCH_HEADER_LENGTH as Inference-Header-Content-Length); stop after $BENCH_MAX_REQUESTS answers.
local file = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE")
local header_length = os.getenv("BENCH_HEADER_LENGTH") or ""
if header_length ~= "" then
  wrk.headers["Inference-Header-Content-Length"] = header_length
end
local key = os.getenv("BENCH_KEY") or ""
if key ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. key
end
local limit = tonumber(os.getenv("BENCH_MAX_REQUESTS") or "0")
local answered = 0

function response(status, headers, body)
  answered = answered + 1
  if limit > 0 and answered >= limit then
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %.0f, "duration_us": %.0f, "p50_us": %.0f, "p95_us": %.0f, "p99_us": %.0f, ' ..
    '"max_us": %.0f, "socket_errors": %.0f, "http_errors": %.0f}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(95),
    latency:percentile(99), latency.max, e.connect + e.read + e.write + e.timeout, e.status))
end
"""


def add_json_option(parser: argparse.ArgumentParser) -> None:
    """Give a script the `--json OUT` option that `write_json` reads."""
    parser.add_argument(
        "--json", type=Path, metavar="OUT", help="also write the figures as JSON to OUT (besides printing them)"
    )


def _plain(value: Any) -> Any:
    """What `json.dumps` cannot encode by itself: dataclasses, paths, numpy numbers and arrays."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        figures = dataclasses.asdict(value)
        if isinstance(value, Measurement):
            figures.update(throughput=value.throughput, cpu_per_request_us=value.cpu_per_request_us)
        return figures
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def write_json(out: Path | None, command: list[str], figures: dict[str, Any]) -> None:
    """Write `figures` with the command that produced them to `out`; nothing when `out` is None."""
    if out is None:
        return
    document = {"command": " ".join(command), "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **figures}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2, default=_plain) + "\n")


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def http(
    method: str, url: str, body: dict[str, Any] | None = None, timeout: float = 10.0, key: str = ""
) -> tuple[int, Any]:
    """One JSON request with the standard library, with `key` as bearer if given; returns (status, decoded body)."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_mib(pid: int) -> tuple[float, float]:
    """Resident memory now and at its peak (VmRSS, VmHWM) in MiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


def children(pid: int) -> list[int]:
    """Direct child processes (the service's inference process and training workers)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with_children = task / "children"
        if with_children.exists():
            found += [int(child) for child in with_children.read_text().split()]
    return found


def process_name(pid: int) -> str:
    """The name `ps` shows (/proc/PID/comm); empty once the process is gone."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def serving_processes(pid: int) -> list[int]:
    """A server's process and its inference process: everything but training workers."""
    return [pid, *(child for child in children(pid) if process_name(child) == INFERENCE_PROCESS_NAME)]


def training_workers(pid: int) -> list[int]:
    """The service's training worker processes."""
    return [child for child in children(pid) if process_name(child) == TRAINING_PROCESS_NAME]


def serving_cpu_seconds(pid: int) -> float:
    """CPU time so far of a server's serving processes (see `serving_processes`)."""
    total = 0.0
    for process in serving_processes(pid):
        with contextlib.suppress(OSError):
            total += cpu_seconds(process)
    return total


@dataclass
class Server:
    """One server process on a loopback port."""

    name: str
    command: list[str]
    ready_path: str
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    # The API key its requests carry ("" for servers without keys).
    key: str = ""
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    ready_seconds: float = 0.0

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """Process id of the server."""
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 300.0) -> None:
        """Start the process and wait until `ready_path` answers 200; records the seconds it took."""
        self.port = free_port()
        command = [part.replace("{port}", str(self.port)) for part in self.command]
        with open(self.log, "wb") as log:
            started = time.perf_counter()
            self.process = subprocess.Popen(
                command,
                cwd=REPOSITORY,
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = started + timeout
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if http("GET", self.url + self.ready_path, timeout=2.0)[0] == 200:
                    self.ready_seconds = time.perf_counter() - started
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.02)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server's log."""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def wait_idle(self, timeout: float = 120.0) -> None:
        """Wait until the server has no backlog: its CPU time stops growing."""
        deadline = time.monotonic() + timeout
        last = serving_cpu_seconds(self.pid)
        while time.monotonic() < deadline:
            time.sleep(0.3)
            now = serving_cpu_seconds(self.pid)
            if now - last < 0.03:
                return
            last = now

    def stop(self) -> None:
        """SIGTERM the server's process group (it and its workers), SIGKILL if it lingers."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def service_server(name: str, models: Path, folder: Path, python: str = sys.executable, **settings: str) -> Server:
    """The stockcast service under uvicorn on a free port, ready at `/ready`, serving `models`.

    Its data folder and log are `folder`/var-`name` and `folder`/`name`.log; no
    bootstrap training, no keys, no access log. `settings` adds STOCKCAST_*
    settings by their lower-case names (`inference_engine="onnx"` sets
    STOCKCAST_INFERENCE_ENGINE).
    """
    command = [python, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", "{port}", *QUIET_UVICORN]
    env = {
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "STOCKCAST_MODELS_DIR": str(models),
        "STOCKCAST_DATA_DIR": str(folder / f"var-{name}"),
        "STOCKCAST_SAMPLE_DATA": str(SAMPLE),
        "STOCKCAST_BOOTSTRAP": "false",
        "STOCKCAST_ACCESS_LOG": "false",
        "STOCKCAST_API_KEYS_FILE": str(folder / "no-keys.json"),
    }
    env.update({f"STOCKCAST_{key.upper()}": value for key, value in settings.items()})
    return Server(name, command, "/ready", folder / f"{name}.log", env=env)


@dataclass(frozen=True)
class Payload:
    """What wrk POSTs: a path, a body file and its headers."""

    path: str
    body: Path
    content_type: str = "application/json"
    header_length: int | None = None
    """Inference-Header-Content-Length, for a V2 request with binary tensors."""

    def send(self, server: Server, timeout: float = 60.0) -> tuple[int, bytes]:
        """One request with the standard library: (status, raw answer)."""
        headers = {"Content-Type": self.content_type}
        if server.key:
            headers["Authorization"] = f"Bearer {server.key}"
        if self.header_length is not None:
            headers["Inference-Header-Content-Length"] = str(self.header_length)
        request = urllib.request.Request(server.url + self.path, data=self.body.read_bytes(), headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()


@dataclass
class Measurement:
    """What wrk reported for one run."""

    server: str
    concurrency: int
    requests: int
    seconds: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    server_cpu_seconds: float = 0.0
    note: str = ""
    # Throughputs of every round, when this is the median of several.
    rounds: list[float] = field(default_factory=list)

    @property
    def throughput(self) -> float:
        """Requests per second."""
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_per_request_us(self) -> float:
        """CPU time of the server's serving processes (all threads) per answered request, in microseconds."""
        return self.server_cpu_seconds / self.requests * 1e6 if self.requests else 0.0


def run_wrk(
    server: Server, concurrency: int, seconds: float, max_requests: int, payload: Payload, script: Path, note: str = ""
) -> Measurement:
    """One closed-loop wrk run posting `payload`."""
    command = [
        "wrk",
        "-t1",
        f"-c{concurrency}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "60s",
        "-s",
        str(script),
        server.url + payload.path,
    ]
    env = {
        **os.environ,
        "BENCH_BODY": str(payload.body),
        "BENCH_CONTENT_TYPE": payload.content_type,
        "BENCH_HEADER_LENGTH": str(payload.header_length or ""),
        "BENCH_MAX_REQUESTS": str(max_requests),
        "BENCH_KEY": server.key,
    }
    cpu_before = serving_cpu_seconds(server.pid)
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=seconds + 120, check=False)
    server_cpu = serving_cpu_seconds(server.pid) - cpu_before
    line = next((line for line in result.stdout.splitlines() if line.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no result:\n{result.stdout}\n{result.stderr}")
    figures = json.loads(line.removeprefix("BENCH_JSON "))
    return Measurement(
        server=server.name,
        concurrency=concurrency,
        requests=int(figures["requests"]),
        seconds=figures["duration_us"] / 1e6,
        p50_ms=figures["p50_us"] / 1e3,
        p95_ms=figures["p95_us"] / 1e3,
        p99_ms=figures["p99_us"] / 1e3,
        max_ms=figures["max_us"] / 1e3,
        errors=int(figures["socket_errors"] + figures["http_errors"]),
        server_cpu_seconds=server_cpu,
        note=note,
    )


def median_run(runs: list[Measurement]) -> Measurement:
    """The run with the median throughput (the lower middle one for an even count), noting the spread."""
    ordered = sorted(runs, key=lambda run: run.throughput)
    chosen = ordered[(len(ordered) - 1) // 2]
    chosen.rounds = [run.throughput for run in runs]
    if len(runs) > 1:
        spread = f"median of {len(runs)} rounds ({ordered[0].throughput:.0f}-{ordered[-1].throughput:.0f} req/s)"
        chosen.note = f"{chosen.note}; {spread}" if chosen.note else spread
    return chosen
