"""The service against a tutorial-style server and a constant endpoint, measured in one run.

    .venv/bin/python bench/serve.py [--models-dir DIR] [--duration 10] [--concurrency 1,32] [--rounds 3] [--json OUT]

Needs `wrk` (Debian: `apt-get install -y wrk`). One run:

1. Without `--models-dir`, trains the benchmark model (64-unit LSTM, 40-day
   window, two epochs on the bundled sample) into a temporary store; a given
   store is copied, so the run never writes into it.
2. Starts the real service (`uvicorn app.main:app`) on a free loopback port
   with STOCKCAST_MODELS_DIR on that store and times start to `GET /ready`
   = 200; then the same service without API keys and with
   STOCKCAST_METRICS=false (`service-open`: what the key check and the
   metrics cost; `service` runs as deployed, with a keys file and metrics,
   and every request it gets carries a key); `service-tf`, the service as
   deployed but with STOCKCAST_INFERENCE_ENGINE=tensorflow (the same
   version on TensorFlow/XLA where `service` runs its checked model.onnx on
   ONNX Runtime; compared round by round); then the two references
   from `bench/reference_servers.py` (tutorial-style `model.predict()` per
   request on the same version, and a constant answer), one after the
   other, so no start-up slows another. With `--baseline-tree DIR` (a
   checkout of an earlier commit: `git worktree add DIR COMMIT`) the
   service of that commit runs too (`baseline`, configured as
   `service-open`), so a change is compared with a published run's code in
   the same rounds rather than with figures from another day.
3. Drives each server with wrk, a separate C process, at each concurrency
   (closed loop: N connections, each sending its next request when the
   previous answer arrives), bounded by `--duration` and `--max-requests`.
   Every server gets the same POST /predict body (one 40-row window as
   arrays) and a short warm-up first; after each run the bench waits until
   the server has drained its backlog (its CPU time stops growing).
   The service is also driven through the standard protocols with the same
   window (`--protocols`, on by default): Open Inference Protocol JSON
   (`v2-json`: POST /v2/models/msft/infer, FP32 data), the same with
   Triton's binary tensors (`v2-binary`: the JSON header, then the 800 raw
   bytes of the window; outputs asked for as binary, as `tritonclient`
   does by default) and TF Serving REST (`tfserving`: POST
   /v1/models/msft:predict with `instances`). One window per request
   everywhere, so requests per second are windows per second.
   This is repeated `--rounds` times, the servers taking turns within each
   round, and the run with the median throughput is reported for each
   server and concurrency: the speed of these shared machines drifts by
   10-20 % from one minute to the next, and taking turns exposes every
   server to the same drift. Every other round runs the servers in reverse
   order. The comparisons (keys and metrics, the baseline) are also printed
   round by round, as ratios of two servers measured next to each other,
   with their median: steadier than the ratio of two medians.
4. Starts a training job on the service (POST /train: a 64-unit LSTM on the
   sample), waits until its first epoch is done, and drives the service at
   the highest concurrency again while the job trains; then cancels it.
5. Prints one table, the resident memory of each server, and the ratios
   against the goals of issue 5, all from this run.

All servers log at "warning" without access logs, and share the machine with
wrk, so the absolute figures include the load generator's CPU use; the
ratios are what compare.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_model import MODEL_NAME, SAMPLE, UNITS, WINDOW, sample_windows, train_benchmark_model
from harness import (
    QUIET_UVICORN,
    WRK_SCRIPT,
    Measurement,
    Payload,
    Server,
    add_json_option,
    cpu_seconds,
    http,
    median_run,
    memory_mib,
    run_wrk,
    serving_processes,
    training_workers,
    write_json,
)

from app.core.keys import create_key

BENCH = Path(__file__).resolve().parent
SERVICE, TUTORIAL, CONSTANT = "service", "tutorial", "constant"
V2_JSON, V2_BINARY, TFSERVING = "service v2-json", "service v2-binary", "service tfserving"
SERVICE_OPEN = "service-open"
# The service with its forecast ledger off (STOCKCAST_LEDGER=false): what keeping every forecast costs.
SERVICE_NO_LEDGER = "service-no-ledger"
GOAL_LEDGER_COST = 0.05
# The service with STOCKCAST_INFERENCE_ENGINE=tensorflow: the same version on TensorFlow/XLA
# where `service` runs its checked model.onnx on ONNX Runtime.
SERVICE_TF = "service-tf"
BASELINE = "baseline"
LOOPBACK = ("--host", "127.0.0.1", "--port", "{port}")
# Goal of issue 16: the key check and the metrics cost less than this share of /predict throughput.
GOAL_GATEWAY_COST = 0.05

# Goals of issue 5.
GOAL_TUTORIAL_RATIO = 50.0
GOAL_CONSTANT_SHARE = 0.5
GOAL_P99_MS = 25.0
GOAL_TRAINING_P99_RATIO = 2.0
GOAL_READY_SECONDS = 10.0


def protocol_payloads(folder: Path, window: list[list[float]]) -> dict[str, Payload]:
    """The benchmark window as a V2 JSON request, a V2 binary request and a TF Serving :predict request."""
    values = np.asarray(window, dtype="<f4")[None]
    tensor = {"name": "window", "shape": list(values.shape), "datatype": "FP32"}
    json_body = {"inputs": [{**tensor, "data": values.ravel().tolist()}]}
    raw = values.tobytes()
    # As tritonclient sends it: no outputs named, so all of them come back as binary.
    header = json.dumps(
        {
            "inputs": [{**tensor, "parameters": {"binary_data_size": len(raw)}}],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    bodies = {
        V2_JSON: json.dumps(json_body).encode(),
        V2_BINARY: header + raw,
        TFSERVING: json.dumps({"instances": [window]}).encode(),
    }
    for name, content in bodies.items():
        (folder / f"{name.split()[-1]}.body").write_bytes(content)
    v2 = f"/v2/models/{MODEL_NAME}/infer"
    return {
        V2_JSON: Payload(v2, folder / "v2-json.body"),
        V2_BINARY: Payload(v2, folder / "v2-binary.body", "application/octet-stream", len(header)),
        TFSERVING: Payload(f"/v1/models/{MODEL_NAME}:predict", folder / "tfserving.body"),
    }


def check_answers(name: str, server: Server, payload: Payload) -> None:
    """Every server must answer the benchmark body with 200 before it is measured."""
    status, answer = payload.send(server)
    if status != 200:
        raise RuntimeError(f"{name} answered {status}: {answer[:500]!r}")


def measure_during_training(
    service: Server, concurrency: int, seconds: float, max_requests: int, body: Payload, script: Path
) -> Measurement:
    """Start a training job, wait for its first epoch, drive the service while it trains, cancel it."""
    job_request = {
        "model": "bench-training",
        "dataset": MODEL_NAME,
        "architecture": "lstm",
        "units": UNITS,
        "window": WINDOW,
        "epochs": 1000,
        "patience": 1000,
    }
    status, accepted = http("POST", service.url + "/train", job_request, key=service.key)
    if status != 202:
        raise RuntimeError(f"POST /train answered {status}: {accepted}")
    job_url = f"{service.url}/jobs/{accepted['job_id']}"
    deadline = time.monotonic() + 300
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = http("GET", job_url, key=service.key)[1]
        if job["status"] in ("succeeded", "failed", "cancelled"):
            raise RuntimeError(f"the training job ended before the measurement: {job}")
        if (job.get("progress") or {}).get("epoch", 0) >= 1:
            break
        time.sleep(0.2)
    else:
        raise RuntimeError(f"the training job did not finish an epoch within 300 s: {job}")
    workers = training_workers(service.pid)
    worker_cpu = sum(cpu_seconds(pid) for pid in workers)
    started = time.monotonic()
    measured = run_wrk(service, concurrency, seconds, max_requests, body, script)
    elapsed = time.monotonic() - started
    worker_cpu = sum(cpu_seconds(pid) for pid in workers if Path(f"/proc/{pid}").exists()) - worker_cpu
    job = http("GET", job_url, key=service.key)[1]
    still = job["status"] == "running"
    measured.server = f"{SERVICE} + training"
    measured.note = (
        f"worker used {worker_cpu / elapsed:.2f} CPU; job {'still running' if still else job['status']} "
        f"at epoch {(job.get('progress') or {}).get('epoch')}"
    )
    http("DELETE", job_url, key=service.key)
    return measured


def print_table(measurements: list[Measurement]) -> None:
    """The figures, one row per server and concurrency."""
    header = (
        f"{'server':20s} {'conc':>4s} {'requests':>8s} {'req/s':>9s} {'p50 ms':>8s} {'p95 ms':>8s} "
        f"{'p99 ms':>8s} {'max ms':>8s} {'errors':>6s} {'CPU us/req':>10s}  note"
    )
    print(header)
    print("-" * len(header))
    for row in measurements:
        print(
            f"{row.server:20s} {row.concurrency:4d} {row.requests:8d} {row.throughput:9.1f} {row.p50_ms:8.2f} "
            f"{row.p95_ms:8.2f} {row.p99_ms:8.2f} {row.max_ms:8.2f} {row.errors:6d} {row.cpu_per_request_us:10.0f}  "
            f"{row.note}"
        )


def print_goals(measurements: list[Measurement], servers: dict[str, Server], top: int) -> None:
    """Ratios from this run against the goals of issue 5."""

    def find(server: str, concurrency: int) -> Measurement:
        return next(row for row in measurements if row.server == server and row.concurrency == concurrency)

    service, tutorial, constant = find(SERVICE, top), find(TUTORIAL, top), find(CONSTANT, top)
    training = find(f"{SERVICE} + training", top)
    checks = [
        (
            f"throughput at c={top} vs tutorial",
            service.throughput / tutorial.throughput,
            f">= {GOAL_TUTORIAL_RATIO:.0f}x",
            service.throughput / tutorial.throughput >= GOAL_TUTORIAL_RATIO,
            "x",
        ),
        (
            f"throughput at c={top} vs constant",
            service.throughput / constant.throughput * 100,
            f">= {GOAL_CONSTANT_SHARE:.0%}",
            service.throughput / constant.throughput >= GOAL_CONSTANT_SHARE,
            "%",
        ),
        (f"p99 at c={top}", service.p99_ms, f"<= {GOAL_P99_MS:.0f} ms", service.p99_ms <= GOAL_P99_MS, " ms"),
        (
            "p99 while training vs idle",
            training.p99_ms / service.p99_ms,
            f"<= {GOAL_TRAINING_P99_RATIO:.0f}x",
            training.p99_ms / service.p99_ms <= GOAL_TRAINING_P99_RATIO,
            "x",
        ),
        (
            "start to /ready",
            servers[SERVICE].ready_seconds,
            f"<= {GOAL_READY_SECONDS:.0f} s",
            servers[SERVICE].ready_seconds <= GOAL_READY_SECONDS,
            " s",
        ),
    ]
    print(f"{'goal (issue 5)':36s} {'measured':>12s} {'target':>10s}  met")
    for label, value, target, met, unit in checks:
        print(f"{label:36s} {value:11.1f}{unit:1s} {target:>10s}  {'yes' if met else 'NO'}")
    if 1 in {row.concurrency for row in measurements}:
        single = find(SERVICE, 1).throughput / find(TUTORIAL, 1).throughput
        print(f"(at c=1 the service answers {single:.1f}x the tutorial server's requests per second)")
    print_gateway_cost(measurements, servers)


def print_gateway_cost(measurements: list[Measurement], servers: dict[str, Server]) -> None:
    """What the key check and the metrics cost: `service` (keys, metrics) against `service-open` (neither)."""
    if not {SERVICE, SERVICE_OPEN} <= servers.keys():
        return
    for concurrency in sorted({row.concurrency for row in measurements if row.server == SERVICE_OPEN}):
        on = next(row for row in measurements if row.server == SERVICE and row.concurrency == concurrency)
        off = next(row for row in measurements if row.server == SERVICE_OPEN and row.concurrency == concurrency)
        cost = 1 - on.throughput / off.throughput
        met = "yes" if cost < GOAL_GATEWAY_COST else "NO"
        print(
            f"keys + metrics at c={concurrency}: {on.throughput:.0f} vs {off.throughput:.0f} req/s without "
            f"({cost:+.1%} throughput cost, goal < {GOAL_GATEWAY_COST:.0%}: {met}); "
            f"API+inference CPU {on.cpu_per_request_us:.0f} vs {off.cpu_per_request_us:.0f} us/request"
        )
        paired = paired_ratios(on, off)
        if paired:
            costs = [1 - ratio for ratio in paired]
            print(
                f"  round by round (the two measured next to each other): cost {', '.join(f'{c:+.1%}' for c in costs)};"
                f" median {statistics.median(costs):+.1%} (goal < {GOAL_GATEWAY_COST:.0%}: "
                f"{'yes' if statistics.median(costs) < GOAL_GATEWAY_COST else 'NO'})"
            )


def print_ledger_cost(measurements: list[Measurement], servers: dict[str, Server]) -> None:
    """What the forecast ledger costs: `service` (ledger on) against `service-no-ledger`, same rounds."""
    if not {SERVICE, SERVICE_NO_LEDGER} <= servers.keys():
        return
    for concurrency in sorted({row.concurrency for row in measurements if row.server == SERVICE_NO_LEDGER}):
        on = next(row for row in measurements if row.server == SERVICE and row.concurrency == concurrency)
        off = next(row for row in measurements if row.server == SERVICE_NO_LEDGER and row.concurrency == concurrency)
        ratio = on.throughput / off.throughput
        print(
            f"ledger on vs off at c={concurrency}: {on.throughput:.0f} vs {off.throughput:.0f} req/s ({ratio:.3f}x; "
            f"within {GOAL_LEDGER_COST:.0%}: {'yes' if ratio > 1 - GOAL_LEDGER_COST else 'NO'}); "
            f"API+inference CPU {on.cpu_per_request_us:.0f} vs {off.cpu_per_request_us:.0f} us/request"
        )
        paired = paired_ratios(on, off)
        if paired:
            print(
                f"  round by round: {', '.join(f'{value:.3f}x' for value in paired)};"
                f" median {statistics.median(paired):.3f}x"
            )


def print_engines(
    measurements: list[Measurement], servers: dict[str, Server], memory: dict[str, dict[str, Any]]
) -> None:
    """ONNX Runtime (`service`) against TensorFlow/XLA (`service-tf`): same version, same rounds, same keys."""
    if not {SERVICE, SERVICE_TF} <= servers.keys():
        return
    for concurrency in sorted({row.concurrency for row in measurements if row.server == SERVICE_TF}):
        onnx = next(row for row in measurements if row.server == SERVICE and row.concurrency == concurrency)
        tf = next(row for row in measurements if row.server == SERVICE_TF and row.concurrency == concurrency)
        print(
            f"ONNX vs TF at c={concurrency}: {onnx.throughput:.0f} vs {tf.throughput:.0f} req/s "
            f"({onnx.throughput / tf.throughput:.2f}x); p99 {onnx.p99_ms:.2f} vs {tf.p99_ms:.2f} ms; "
            f"API+inference CPU {onnx.cpu_per_request_us:.0f} vs {tf.cpu_per_request_us:.0f} us/request"
        )
        paired = paired_ratios(onnx, tf)
        if paired:
            print(
                f"  round by round: {', '.join(f'{value:.2f}x' for value in paired)};"
                f" median {statistics.median(paired):.2f}x"
            )
    onnx_memory, tf_memory = memory[SERVICE], memory[SERVICE_TF]
    print(
        f"ONNX vs TF RSS (API + inference): {onnx_memory['rss_mib']:.0f} vs {tf_memory['rss_mib']:.0f} MiB "
        f"(inference process {onnx_memory['processes_rss_mib'][-1]:.0f} vs {tf_memory['processes_rss_mib'][-1]:.0f});"
        f" start to ready {onnx_memory['ready_seconds']:.1f} vs {tf_memory['ready_seconds']:.1f} s"
    )


def paired_ratios(one: Measurement, other: Measurement) -> list[float]:
    """`one`'s throughput over `other`'s, round by round (both measured in the same round), when there are rounds."""
    if len(one.rounds) < 2 or len(one.rounds) != len(other.rounds):
        return []
    return [mine / theirs for mine, theirs in zip(one.rounds, other.rounds, strict=True) if theirs]


def print_baseline(measurements: list[Measurement], servers: dict[str, Server]) -> None:
    """The service as it is against `--baseline-tree` (an earlier commit of it), each against the constant endpoint."""
    if BASELINE not in servers:
        return
    for concurrency in sorted({row.concurrency for row in measurements if row.server == BASELINE}):
        rows = {row.server: row for row in measurements if row.concurrency == concurrency}
        base = rows[BASELINE]
        for name in (SERVICE, SERVICE_OPEN):
            if name not in rows:
                continue
            row = rows[name]
            shares = ""
            if CONSTANT in rows:
                constant = rows[CONSTANT].throughput
                shares = f"; share of constant {row.throughput / constant:.1%} vs {base.throughput / constant:.1%}"
            print(
                f"{name} vs baseline at c={concurrency}: {row.throughput:.0f} vs {base.throughput:.0f} req/s "
                f"({row.throughput / base.throughput:.2f}x){shares}; "
                f"API+inference CPU {row.cpu_per_request_us:.0f} vs {base.cpu_per_request_us:.0f} us/request"
            )
            paired = paired_ratios(row, base)
            if paired:
                print(
                    f"  round by round: {', '.join(f'{ratio:.2f}x' for ratio in paired)};"
                    f" median {statistics.median(paired):.2f}x"
                )


def print_protocols(measurements: list[Measurement], top: int) -> None:
    """Each standard protocol's windows per second and CPU per window against /predict with arrays, same run."""
    rows = {row.server: row for row in measurements if row.concurrency == top}
    if SERVICE not in rows:
        return
    service = rows[SERVICE]
    for name in (V2_BINARY, V2_JSON, TFSERVING):
        if name in rows:
            row = rows[name]
            protocol = name.removeprefix(SERVICE + " ")
            speed = row.throughput / service.throughput
            cost = row.cpu_per_request_us / service.cpu_per_request_us
            print(
                f"(at c={top}, {protocol}: {speed:.2f}x the windows per second of /predict with arrays, "
                f"{cost:.2f}x its CPU per window)"
            )


def main() -> None:
    """Train or copy the model, start the servers, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, help=f"store with model '{MODEL_NAME}' (default: train one)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--max-requests", type=int, default=200_000, help="most requests per wrk run")
    parser.add_argument("--concurrency", default="1,32", help="comma list of connection counts")
    parser.add_argument("--rounds", type=int, default=3, help="runs per server and concurrency (median reported)")
    parser.add_argument("--keep-logs", type=Path, help="copy the servers' logs into this folder")
    parser.add_argument("--skip-training", action="store_true", help="leave out the run during a training job")
    parser.add_argument("--app", default="app.main:app", help="ASGI app of the service (to try a variant)")
    parser.add_argument("--app-dir", type=Path, help="folder to import --app from (uvicorn --app-dir)")
    parser.add_argument(
        "--baseline-tree",
        type=Path,
        help=f"also run '{BASELINE}': the service from this checkout of an earlier commit (git worktree add DIR"
        " COMMIT), without keys or metrics, in the same rounds",
    )
    parser.add_argument(
        "--service-env", action="append", default=[], metavar="KEY=VALUE", help="extra environment for the service"
    )
    parser.add_argument(
        "--protocols",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also drive the service through V2 JSON, V2 binary and TF Serving REST",
    )
    parser.add_argument(
        "--servers",
        default=f"{SERVICE},{SERVICE_TF},{SERVICE_OPEN},{TUTORIAL},{CONSTANT}",
        help=f"which servers to run (the goals need {SERVICE}, {TUTORIAL} and {CONSTANT})",
    )
    add_json_option(parser)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench/serve.py needs wrk: apt-get install -y wrk")
    levels = [int(level) for level in args.concurrency.split(",")]

    with tempfile.TemporaryDirectory(prefix="stockcast-bench-") as temporary:
        folder = Path(temporary)
        store_root = folder / "models"
        if args.models_dir is None:
            started = time.perf_counter()
            train_benchmark_model(store_root)
            print(f"trained the benchmark model in {time.perf_counter() - started:.1f}s")
        else:
            shutil.copytree(args.models_dir, store_root)
        metadata = json.loads(next((store_root / MODEL_NAME).glob("*/metadata.json")).read_text())
        window = sample_windows(int(metadata["window"]), tuple(metadata["features"]), 1)[0]
        body = {"model": MODEL_NAME, "window": window}
        body_path = folder / "body.json"
        body_path.write_text(json.dumps(body))
        predict = Payload("/predict", body_path)
        script = folder / "post.lua"
        script.write_text(WRK_SCRIPT)

        uvicorn = [sys.executable, "-m", "uvicorn"]
        reference = [sys.executable, str(BENCH / "reference_servers.py")]
        quiet = {"TF_CPP_MIN_LOG_LEVEL": "2"}

        # Keys as deployed: a keys file with one admin key, sent with every request.
        keys_file = folder / "api_keys.json"
        key = create_key(keys_file, "bench", "admin")

        def service(
            name: str, keyed: bool = True, app: str = args.app, app_dir: Path | None = args.app_dir, **env: str
        ) -> Server:
            return Server(
                name,
                [*uvicorn, app, *LOOPBACK, *QUIET_UVICORN] + (["--app-dir", str(app_dir)] if app_dir else []),
                "/ready",
                folder / f"{name}.log",
                env={
                    **quiet,
                    "STOCKCAST_MODELS_DIR": str(store_root),
                    "STOCKCAST_DATA_DIR": str(folder / f"var-{name}"),
                    "STOCKCAST_SAMPLE_DATA": str(SAMPLE),
                    "STOCKCAST_BOOTSTRAP": "false",
                    # Uvicorn's access log is off for every server (QUIET_UVICORN); so is the service's own.
                    "STOCKCAST_ACCESS_LOG": "false",
                    "STOCKCAST_API_KEYS_FILE": str(keys_file if keyed else folder / f"no-keys-{name}.json"),
                    **env,
                    **dict(pair.split("=", 1) for pair in args.service_env),
                },
                key=key if keyed else "",
            )

        servers = {
            SERVICE: service(SERVICE),
            # No keys (open on loopback) and no metrics: what the gateway's checks and counting cost, same run.
            SERVICE_OPEN: service(SERVICE_OPEN, keyed=False, STOCKCAST_METRICS="false"),
            SERVICE_NO_LEDGER: service(SERVICE_NO_LEDGER, STOCKCAST_LEDGER="false"),
            SERVICE_TF: service(SERVICE_TF, STOCKCAST_INFERENCE_ENGINE="tensorflow"),
            # The service of an earlier commit (`--baseline-tree`), configured as service-open: a regression
            # is measured against it in the same rounds, not against figures from another day.
            **(
                {
                    BASELINE: service(
                        BASELINE,
                        keyed=False,
                        app="app.main:app",
                        app_dir=args.baseline_tree,
                        STOCKCAST_METRICS="false",
                        # The inference process it spawns imports from the same tree.
                        PYTHONPATH=str(args.baseline_tree),
                    )
                }
                if args.baseline_tree is not None
                else {}
            ),
            TUTORIAL: Server(
                TUTORIAL,
                [*reference, TUTORIAL, "--port", "{port}", "--models-dir", str(store_root), "--model", MODEL_NAME],
                "/health",
                folder / "tutorial.log",
                env=quiet,
            ),
            CONSTANT: Server(
                CONSTANT,
                [*reference, CONSTANT, "--port", "{port}"],
                "/health",
                folder / "constant.log",
            ),
        }
        wanted = args.servers.split(",")
        servers = {name: server for name, server in servers.items() if name in wanted or name == BASELINE}
        # What each round drives: every server with /predict, and the service through each protocol.
        targets = {name: (server, predict) for name, server in servers.items()}
        if args.protocols and SERVICE in servers:
            targets.update(
                {name: (servers[SERVICE], payload) for name, payload in protocol_payloads(folder, window).items()}
            )
        measurements: list[Measurement] = []
        try:
            for server in servers.values():
                server.start()
            for name, (server, payload) in targets.items():
                check_answers(name, server, payload)
            print(
                f"{os.cpu_count()} CPU(s); model {MODEL_NAME}: {metadata['architecture']} "
                f"{metadata['hyperparameters']['units']} units, window {metadata['window']}; "
                f"{args.duration:.0f}s per run, at most {args.max_requests} requests, {args.rounds} round(s)"
            )
            for concurrency in levels:
                runs: dict[str, list[Measurement]] = {name: [] for name in targets}
                for round_index in range(max(1, args.rounds)):
                    # Every other round in reverse order: a machine speeding up or slowing down over a run
                    # then favours no server, and the servers compared are always measured next to each other.
                    order = list(targets.items())
                    for name, (server, payload) in order if round_index % 2 == 0 else reversed(order):
                        # Warm-up: code paths, connection handling, allocator.
                        run_wrk(server, 1, 1, 20, payload, script)
                        server.wait_idle()
                        measured = run_wrk(server, concurrency, args.duration, args.max_requests, payload, script)
                        measured.server = name
                        runs[name].append(measured)
                        server.wait_idle()
                measurements += [median_run(found) for found in runs.values()]
            if not args.skip_training and SERVICE in servers:
                measurements.append(
                    measure_during_training(
                        servers[SERVICE], max(levels), args.duration, args.max_requests, predict, script
                    )
                )
            print()
            print_table(measurements)
            print()
            print(f"{'server':14s} {'start to ready':>14s} {'RSS MiB':>8s} {'peak RSS MiB':>12s}  processes")
            memory: dict[str, dict[str, Any]] = {}
            for server in servers.values():
                # The service's inference process is part of what it costs to run.
                sizes = [memory_mib(pid) for pid in serving_processes(server.pid)]
                resident, peak = sum(size[0] for size in sizes), sum(size[1] for size in sizes)
                memory[server.name] = {
                    "ready_seconds": server.ready_seconds,
                    "rss_mib": resident,
                    "peak_rss_mib": peak,
                    "processes_rss_mib": [size[0] for size in sizes],
                }
                parts = " + ".join(f"{size[0]:.0f}" for size in sizes)
                print(
                    f"{server.name:14s} {server.ready_seconds:13.1f}s {resident:8.0f} {peak:12.0f}"
                    f"  {len(sizes)} ({parts} MiB)"
                )
            print()
            print_protocols(measurements, max(levels))
            if not args.skip_training and {SERVICE, TUTORIAL, CONSTANT} <= servers.keys():
                print_goals(measurements, servers, max(levels))
            else:
                print_gateway_cost(measurements, servers)
            print_baseline(measurements, servers)
            print_ledger_cost(measurements, servers)
            print_engines(measurements, servers, memory)
            write_json(
                args.json,
                sys.argv,
                {"cpu_count": os.cpu_count(), "measurements": measurements, "servers": memory},
            )
        finally:
            for server in servers.values():
                server.stop()
            if args.keep_logs is not None:
                args.keep_logs.mkdir(parents=True, exist_ok=True)
                for server in servers.values():
                    if server.log.exists():
                        shutil.copy(server.log, args.keep_logs / server.log.name)


if __name__ == "__main__":
    main()
