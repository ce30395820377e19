"""What does the Python client cost over raw httpx? Per forecast (wall and client CPU) and to import.

    .venv/bin/python bench/client.py [--models-dir DIR] [--requests 300] [--rounds 5] [--json OUT]

Starts the service (uvicorn, keyless on loopback, its access log off) on
the benchmark model (`bench/bench_model.py`), then sends the same 40-row
windows, one request at a time, three ways taking turns in each round:
`raw` (httpx.Client.post of the arrays body, `response.json()`), `client
arrays` (`Client.forecast` with a numpy array and its last date) and
`client frame` (`Client.forecast` with a DataFrame of Yahoo columns). All
three send the arrays form with `last_date`, so the service does the same
work for each. Prints the median per round of wall and of this process's
CPU per request, and their ratios to raw; then the same 32 at a time with
`AsyncClient` against `httpx.AsyncClient`; then the client's CPU alone,
the three ways again with the service's recorded answers replayed by
`httpx.MockTransport` (no network, no server: the steadiest figure); then
the import time of `stockcast_client` and of httpx alone, each in fresh
interpreters.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
from bench_model import MODEL_NAME, SAMPLE, WINDOW, train_benchmark_model
from harness import add_json_option, service_server, write_json
from stockcast_client import AsyncClient, Client

FEATURES = ("open", "high", "low", "close", "volume")
IMPORT_BUDGET_SECONDS = 0.5
CONCURRENCY = 32
JSON = {"Content-Type": "application/json"}


def median_round(rounds: list[tuple[float, float]], requests: int) -> dict[str, Any]:
    """Per-request wall and CPU in microseconds: the median over rounds, and every round's wall."""
    walls = [wall / requests * 1e6 for wall, _ in rounds]
    cpus = [cpu / requests * 1e6 for _, cpu in rounds]
    return {"wall_us": statistics.median(walls), "cpu_us": statistics.median(cpus), "rounds_wall_us": walls}


def timed(send: Callable[[int], Any], requests: int) -> tuple[float, float]:
    """Wall and CPU seconds of `requests` calls of `send(index)`."""
    wall, cpu = time.perf_counter(), time.process_time()
    for index in range(requests):
        send(index)
    return time.perf_counter() - wall, time.process_time() - cpu


@dataclass(frozen=True)
class Windows:
    """The windows every way sends: as DataFrames, as arrays with their last dates, and as raw bodies."""

    frames: list[pd.DataFrame]
    arrays: list[np.ndarray]
    dates: list[dt.date]

    @classmethod
    def of(cls, frames: list[pd.DataFrame]) -> Windows:
        """The last rows and date of each frame."""
        columns = [name.title() for name in FEATURES]
        arrays = [frame[columns].to_numpy(dtype=np.float64)[-WINDOW:] for frame in frames]
        return cls(frames, arrays, [frame["Date"].iloc[-1].date() for frame in frames])

    def body(self, index: int) -> bytes:
        """The raw request a back end writes by hand: the arrays form with its last date, encoded now."""
        index %= len(self.frames)
        window = {
            "model": MODEL_NAME,
            "window": self.arrays[index].tolist(),
            "last_date": self.dates[index].isoformat(),
        }
        return json.dumps(window).encode()


def three_ways(url: str, windows: Windows, http: httpx.Client, client: Client) -> dict[str, Callable[[int], Any]]:
    """Raw httpx, the client with arrays and dates, the client with DataFrames."""
    count = len(windows.frames)

    def raw(index: int) -> Any:
        answer = http.post(url + "/predict", content=windows.body(index), headers=JSON)
        answer.raise_for_status()
        return answer.json()

    return {
        "raw": raw,
        "client arrays": lambda index: client.forecast(
            MODEL_NAME, windows.arrays[index % count], last_date=windows.dates[index % count]
        ),
        "client frame": lambda index: client.forecast(MODEL_NAME, windows.frames[index % count]),
    }


def take_turns(ways: dict[str, Callable[[int], Any]], requests: int, rounds: int) -> dict[str, dict[str, Any]]:
    """Each way `requests` times per round, in turn, after a warm-up (connections, the model's description)."""
    for send in ways.values():
        timed(send, 50)
    measured: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
    for _ in range(rounds):
        for name, send in ways.items():
            measured[name].append(timed(send, requests))
    return {name: median_round(runs, requests) for name, runs in measured.items()}


def sequential(url: str, windows: Windows, requests: int, rounds: int) -> dict[str, dict[str, Any]]:
    """One request at a time to the service, the three ways taking turns each round."""
    with httpx.Client() as http, Client(url) as client:
        return take_turns(three_ways(url, windows, http, client), requests, rounds)


def replayed(url: str, windows: Windows, requests: int, rounds: int) -> dict[str, dict[str, Any]]:
    """The three ways again, answered in process by `httpx.MockTransport` with the service's recorded answers."""
    recorded: dict[tuple[str, str], httpx.Response] = {}
    with httpx.Client() as http:
        recorded["GET", f"/models/{MODEL_NAME}"] = http.get(f"{url}/models/{MODEL_NAME}")
        recorded["POST", "/predict"] = http.post(url + "/predict", content=windows.body(0), headers=JSON)

    def replay(request: httpx.Request) -> httpx.Response:
        found = recorded[request.method, request.url.path]
        return httpx.Response(found.status_code, headers=found.headers, content=found.content)

    transport = httpx.MockTransport(replay)
    with (
        httpx.Client(transport=transport) as http,
        httpx.Client(transport=transport) as inner,
        Client(url, http=inner) as client,
    ):
        ways = three_ways(url, windows, http, client)
        return take_turns({f"{name} replayed": send for name, send in ways.items()}, requests, rounds)


async def concurrent(url: str, windows: Windows, requests: int, rounds: int) -> dict[str, dict[str, Any]]:
    """`CONCURRENCY` requests at a time: AsyncClient with DataFrames against httpx.AsyncClient."""
    async with httpx.AsyncClient() as http, AsyncClient(url) as client:

        async def raw(index: int) -> Any:
            answer = await http.post(url + "/predict", content=windows.body(index), headers=JSON)
            answer.raise_for_status()
            return answer.json()

        async def framed(index: int) -> Any:
            return await client.forecast(MODEL_NAME, windows.frames[index % len(windows.frames)])

        async def burst(send: Callable[[int], Any], count: int) -> tuple[float, float]:
            wall, cpu = time.perf_counter(), time.process_time()
            for start in range(0, count, CONCURRENCY):
                await asyncio.gather(*(send(index) for index in range(start, min(count, start + CONCURRENCY))))
            return time.perf_counter() - wall, time.process_time() - cpu

        ways = {"raw async": raw, "client async frame": framed}
        for send in ways.values():
            await burst(send, CONCURRENCY * 2)
        measured: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
        for _ in range(rounds):
            for name, send in ways.items():
                measured[name].append(await burst(send, requests))
    return {name: median_round(runs, requests) for name, runs in measured.items()}


def import_seconds(module: str, runs: int) -> dict[str, Any]:
    """Median cumulative import time of `module` in fresh interpreters (`-X importtime`), without this checkout."""
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    seconds = []
    for _ in range(runs):
        answer = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", f"import {module}"],
            env=env,
            cwd="/",
            capture_output=True,
            text=True,
            check=True,
        )
        found = re.search(rf"^import time:\s+\d+ \|\s+(\d+) \| {re.escape(module)}$", answer.stderr, re.MULTILINE)
        if found is None:
            raise RuntimeError(f"no import time for {module}:\n{answer.stderr[-2000:]}")
        seconds.append(int(found.group(1)) / 1e6)
    return {"median_s": statistics.median(seconds), "runs_s": seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, help="a store holding the benchmark model (else one is trained)")
    parser.add_argument("--requests", type=int, default=300, help="requests per way and round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; each way's median round is reported")
    parser.add_argument("--windows", type=int, default=100, help="distinct windows sent, in turn")
    add_json_option(parser)
    args = parser.parse_args()

    prices = pd.read_csv(SAMPLE, parse_dates=["Date"])
    windows = Windows.of([prices.iloc[: len(prices) - back] for back in range(args.windows)])
    with tempfile.TemporaryDirectory(prefix="stockcast-client-") as folder:
        home = Path(folder)
        store = args.models_dir or home / "models"
        if args.models_dir is None:
            train_benchmark_model(store)
        server = service_server("service", store, home)
        server.start()
        try:
            one_at_a_time = sequential(server.url, windows, args.requests, args.rounds)
            at_once = asyncio.run(concurrent(server.url, windows, args.requests, args.rounds))
            alone = replayed(server.url, windows, args.requests * 5, args.rounds)
        finally:
            server.stop()
    imports = {module: import_seconds(module, 7) for module in ("httpx", "stockcast_client")}

    figures: dict[str, Any] = {
        "sequential": one_at_a_time,
        "concurrent": at_once,
        "replayed": alone,
        "imports": imports,
    }
    print(f"one request at a time, {args.requests} per way and round, median of {args.rounds} rounds:")
    print(f"{'way':22s} {'wall/request':>13s} {'x raw':>7s} {'CPU/request':>12s} {'x raw':>7s} {'CPU over raw':>13s}")
    headings = {
        "raw": f"{CONCURRENCY} requests at a time (asyncio), wall per request is throughput's inverse:",
        "raw async": "the client's CPU alone: the service's answers replayed in process (httpx.MockTransport):",
    }
    for results, baseline in ((one_at_a_time, "raw"), (at_once, "raw async"), (alone, "raw replayed")):
        base = results[baseline]
        for name, result in results.items():
            result["wall_ratio"] = result["wall_us"] / base["wall_us"]
            result["cpu_ratio"] = result["cpu_us"] / base["cpu_us"]
            result["cpu_over_raw_us"] = result["cpu_us"] - base["cpu_us"]
            print(
                f"{name:22s} {result['wall_us']:11.0f}us {result['wall_ratio']:6.2f}x {result['cpu_us']:10.0f}us "
                f"{result['cpu_ratio']:6.2f}x {result['cpu_over_raw_us']:+11.0f}us"
            )
        if baseline in headings:
            print(headings[baseline])
    client_import = imports["stockcast_client"]["median_s"]
    verdict = "within" if client_import < IMPORT_BUDGET_SECONDS else "OVER"
    print(
        f"import, median of 7 fresh interpreters: httpx {imports['httpx']['median_s'] * 1000:.0f} ms,"
        f" stockcast_client {client_import * 1000:.0f} ms (httpx included);"
        f" budget {IMPORT_BUDGET_SECONDS * 1000:.0f} ms: {verdict}"
    )
    write_json(args.json, sys.argv, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
