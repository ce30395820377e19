"""Do hostile V2 requests at the body limit slow everyone else? /health and /predict latency, quiet vs attacked.

    .venv/bin/python bench/abuse.py [--models-dir DIR] [--seconds 20] [--attackers 2] [--json OUT]

Starts the service as deployed (`python -m app`, keyless on loopback) on
the benchmark model (`bench/bench_model.py`), then measures, one request at
a time from one client, the latency of GET /health and of POST /predict
(one 40-row window): first with nothing else running, then while
`--attackers` threads send, back to back, the two V2 requests the
hardening issue found (a `shape` of ever more sizes, and 64,000 repeated
`outputs`), each padded to the service's body limit. Prints p50 and p99 of
both phases and their ratio, and what the attacks were answered.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bench_model import MODEL_NAME, REPOSITORY, WINDOW, sample_windows, train_benchmark_model
from harness import add_json_option, free_port, http, write_json

BODY_LIMIT = 16 * 1024 * 1024
FEATURES = ("open", "high", "low", "close", "volume")


def shape_attack(limit: int) -> bytes:
    """A V2 infer body whose `shape` lists sizes of 10**9 up to the body limit."""
    head = b'{"inputs":[{"name":"window","datatype":"FP32","data":[1],"shape":['
    count = (limit - len(head) - 8) // len(b"1000000000,")
    return head + b",".join([b"1000000000"] * count) + b"]}]}"


def outputs_attack(limit: int, window: list[list[float]]) -> bytes:
    """A V2 infer body with one window and the same output asked for until the body limit."""
    data = json.dumps([value for row in window for value in row]).encode()
    head = b'{"inputs":[{"name":"window","datatype":"FP64","shape":[1,%d,%d],"data":%s}],"outputs":[' % (
        len(window),
        len(window[0]),
        data,
    )
    count = (limit - len(head) - 8) // len(b'{"name":"forecast"},')
    return head + b",".join([b'{"name":"forecast"}'] * count) + b"]}"


def post(url: str, body: bytes, timeout: float = 120.0) -> tuple[int, float]:
    """POST a JSON body; (status, seconds)."""
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            answer.read()
            return answer.status, time.perf_counter() - started
    except urllib.error.HTTPError as error:
        error.read()
        return error.code, time.perf_counter() - started


def get(url: str, timeout: float = 120.0) -> float:
    """GET; seconds."""
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        answer.read()
    return time.perf_counter() - started


def probe(base: str, predict_body: bytes, seconds: float) -> dict[str, list[float]]:
    """Alternate GET /health and POST /predict for `seconds`; each one's latencies in milliseconds."""
    latencies: dict[str, list[float]] = {"health": [], "predict": []}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        latencies["health"].append(get(f"{base}/health") * 1000)
        status, took = post(f"{base}/predict", predict_body)
        if status != 200:
            raise RuntimeError(f"/predict answered {status}")
        latencies["predict"].append(took * 1000)
    return latencies


def percentiles(values: list[float]) -> dict[str, float]:
    """p50 and p99 of a sample."""
    ordered = sorted(values)
    return {
        "count": len(ordered),
        "p50_ms": statistics.median(ordered),
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, help="a store holding the benchmark model (else one is trained)")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    parser.add_argument("--attackers", type=int, default=2, help="threads sending the hostile requests")
    add_json_option(parser)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="stockcast-abuse-") as folder:
        home = Path(folder)
        store = args.models_dir or home / "models"
        if args.models_dir is None:
            train_benchmark_model(store)
        port = free_port()
        env = {
            **os.environ,
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "STOCKCAST_PORT": str(port),
            "STOCKCAST_MODELS_DIR": str(store),
            "STOCKCAST_DATA_DIR": str(home / "var"),
            "STOCKCAST_BOOTSTRAP": "false",
            "STOCKCAST_MAX_REQUEST_BYTES": str(BODY_LIMIT),
            "STOCKCAST_ACCESS_LOG": "false",
        }
        log = open(home / "service.log", "wb")  # noqa: SIM115 - closed with the process below
        service = subprocess.Popen(
            [sys.executable, "-m", "app"], cwd=REPOSITORY, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 300
            while True:
                try:
                    if http("GET", f"{base}/ready", timeout=2)[0] == 200:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline or service.poll() is not None:
                    raise RuntimeError((home / "service.log").read_text()[-2000:])
                time.sleep(0.2)
            window = sample_windows(WINDOW, FEATURES, 1)[0]
            predict_body = json.dumps({"model": MODEL_NAME, "window": window}).encode()
            attacks = {"shape": shape_attack(BODY_LIMIT - 4096), "outputs": outputs_attack(BODY_LIMIT - 4096, window)}
            probe(base, predict_body, 2.0)  # warm-up
            quiet = probe(base, predict_body, args.seconds)

            stop = threading.Event()
            answered: dict[str, list[tuple[int, float]]] = {name: [] for name in attacks}

            def attack(name: str) -> None:
                url = f"{base}/v2/models/{MODEL_NAME}/infer"
                while not stop.is_set():
                    answered[name].append(post(url, attacks[name]))

            threads = [
                threading.Thread(target=attack, args=(name,), daemon=True)
                for index in range(args.attackers)
                for name in [list(attacks)[index % len(attacks)]]
            ]
            for thread in threads:
                thread.start()
            attacked = probe(base, predict_body, args.seconds)
            stop.set()
            for thread in threads:
                thread.join(120)
        finally:
            service.terminate()
            service.wait(30)
            log.close()

    figures: dict[str, Any] = {"attack_bytes": {name: len(body) for name, body in attacks.items()}}
    print(f"attack bodies: {', '.join(f'{name} {len(body) / 2**20:.1f} MiB' for name, body in attacks.items())}")
    print(f"{'route':10s} {'quiet p50':>10s} {'p99':>8s} {'attacked p50':>13s} {'p99':>8s} {'p50 ratio':>10s}")
    for route in ("health", "predict"):
        before, during = percentiles(quiet[route]), percentiles(attacked[route])
        ratio = during["p50_ms"] / before["p50_ms"]
        figures[route] = {"quiet": before, "attacked": during, "p50_ratio": ratio}
        print(
            f"{route:10s} {before['p50_ms']:9.2f}ms {before['p99_ms']:7.2f}ms "
            f"{during['p50_ms']:12.2f}ms {during['p99_ms']:7.2f}ms {ratio:9.2f}x"
        )
    for name, results in answered.items():
        statuses = sorted({status for status, _ in results})
        seconds = [took * 1000 for _, took in results]
        figures[f"attack_{name}"] = {"requests": len(results), "statuses": statuses, "latency": percentiles(seconds)}
        if results:
            print(
                f"attack {name}: {len(results)} requests answered {statuses}, "
                f"median {statistics.median(seconds):.0f} ms each (upload and refusal)"
            )
    write_json(args.json, sys.argv, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
