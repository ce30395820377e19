"""Where the API process's time goes on /predict under load: each step, timed inside the running service.

    .venv/bin/python bench/request_steps.py [--models-dir DIR] [--duration 10] [--concurrency 32] [--json OUT]

Needs `wrk`. Starts the real service with uvicorn, from `instrumented_app`:
the same app, with the synchronous steps of the /predict path wrapped in
timers (about 0.3 us each). Drives it with wrk like `bench/serve.py`, then
reads the totals from `GET /_steps` and prints microseconds per request for
each step beside the CPU time per request of the API process and of the
inference process (/proc). What the steps do not cover is uvicorn, the
ASGI layers in front of the gateway and asyncio, plus the suspension and
resumption of each request around its batch.

The same steps timed in a tight loop are several times faster; comparing
the two is the point (`docs/design.md`, "Serving path").
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import sys
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent

# (label, module or class, attribute); nested steps are indented in the table.
STEPS: list[tuple[str, str, str]] = [
    ("parse the body", "app.api.predict", "parse_predict"),
    ("check the window against the version", "app.serving.forecasting", "window_to_array"),
    # Scaling, prices and bounds run in the inference process (its CPU is printed beside).
    ("start a batch (stack, send)", "app.serving.batching:MicroBatcher", "_dispatch"),
    ("read the inference reply", "app.inference.client:_WorkerLink", "data_received"),
    ("end a batch (hand out)", "app.serving.batching:MicroBatcher", "_hand_out"),
    ("build the answer's rows", "app.api.predict", "forecast_steps"),
    ("encode the answer (orjson)", "app.api.predict:orjson", "dumps"),
]


def instrumented_app() -> Any:
    """The service's app with every step in STEPS timed; totals at GET /_steps."""
    import importlib

    from fastapi.responses import JSONResponse

    from app.main import create_app

    totals: collections.Counter[str] = collections.Counter()
    calls: collections.Counter[str] = collections.Counter()

    def timed(label: str, function: Callable[..., Any]) -> Callable[..., Any]:
        clock = time.perf_counter_ns

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = clock()
            try:
                return function(*args, **kwargs)
            finally:
                totals[label] += clock() - started
                calls[label] += 1

        return wrapper

    for label, where, attribute in STEPS:
        module_name, _, owner_name = where.partition(":")
        owner: Any = importlib.import_module(module_name)
        if owner_name:
            owner = getattr(owner, owner_name)
        if isinstance(owner, types.ModuleType) and owner.__name__ == "orjson":
            # orjson is a C module: give the module that uses it a stand-in (every name, a timed dumps).
            user = importlib.import_module(module_name)
            stand_in = types.SimpleNamespace(**vars(owner))
            stand_in.dumps = timed(label, owner.dumps)
            user.orjson = stand_in  # type: ignore[attr-defined]
            continue
        setattr(owner, attribute, timed(label, getattr(owner, attribute)))

    service = create_app()

    @service.get("/_steps", include_in_schema=False)
    async def read_steps() -> JSONResponse:
        return JSONResponse({"ns": dict(totals), "calls": dict(calls)})

    return service


def main() -> None:
    """Serve the instrumented app, load it with wrk, print the table."""
    sys.path.insert(0, str(BENCH))
    from bench_model import MODEL_NAME, SAMPLE, WINDOW, sample_windows, train_benchmark_model
    from harness import (
        QUIET_UVICORN,
        WRK_SCRIPT,
        Payload,
        Server,
        add_json_option,
        cpu_seconds,
        http,
        run_wrk,
        serving_processes,
        write_json,
    )

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, help=f"store with model '{MODEL_NAME}' (default: train one)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load")
    parser.add_argument("--concurrency", type=int, default=32, help="wrk connections")
    parser.add_argument(
        "--engine",
        default="auto",
        help="STOCKCAST_INFERENCE_ENGINE: auto (ONNX for a version with model.onnx) or tensorflow",
    )
    add_json_option(parser)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench/request_steps.py needs wrk: apt-get install -y wrk")

    with tempfile.TemporaryDirectory(prefix="stockcast-steps-") as temporary:
        folder = Path(temporary)
        store_root = folder / "models"
        if args.models_dir is None:
            train_benchmark_model(store_root)
        else:
            shutil.copytree(args.models_dir, store_root)
        from training.store import ModelStore

        store = ModelStore(store_root)
        features = tuple(store.read_metadata(MODEL_NAME, store.versions(MODEL_NAME)[-1])["features"])
        body_path = folder / "body.json"
        body_path.write_text(json.dumps({"model": MODEL_NAME, "window": sample_windows(WINDOW, features, 1)[0]}))
        script = folder / "post.lua"
        script.write_text(WRK_SCRIPT)
        server = Server(
            "service",
            [
                sys.executable,
                "-m",
                "uvicorn",
                "request_steps:instrumented_app",
                "--factory",
                "--app-dir",
                str(BENCH),
                "--host",
                "127.0.0.1",
                "--port",
                "{port}",
                *QUIET_UVICORN,
            ],
            "/ready",
            folder / "service.log",
            env={
                "TF_CPP_MIN_LOG_LEVEL": "2",
                "STOCKCAST_MODELS_DIR": str(store_root),
                "STOCKCAST_DATA_DIR": str(folder / "var"),
                "STOCKCAST_SAMPLE_DATA": str(SAMPLE),
                "STOCKCAST_BOOTSTRAP": "false",
                "STOCKCAST_INFERENCE_ENGINE": args.engine,
            },
        )
        try:
            server.start()
            # Let a background XLA compilation finish (the TensorFlow engine), then warm up.
            deadline = time.monotonic() + 120
            while http("GET", f"{server.url}/models/{MODEL_NAME}")[1]["serving"]["engine"] not in ("xla", "onnx"):
                if time.monotonic() > deadline:
                    raise RuntimeError("XLA compilation did not finish within 120 s")
                time.sleep(0.5)
            payload = Payload("/predict", body_path)
            run_wrk(server, args.concurrency, 2, 10_000, payload, script)
            server.wait_idle()
            processes = serving_processes(server.pid)
            before_steps = http("GET", server.url + "/_steps")[1]
            before_cpu = [cpu_seconds(pid) for pid in processes]
            measured = run_wrk(server, args.concurrency, args.duration, 1_000_000, payload, script)
            after_cpu = [cpu_seconds(pid) for pid in processes]
            after_steps = http("GET", server.url + "/_steps")[1]
        finally:
            server.stop()

    requests = measured.requests
    print(
        f"{requests} requests at concurrency {args.concurrency} in {measured.seconds:.1f} s: "
        f"{measured.throughput:.0f} req/s, p99 {measured.p99_ms:.1f} ms"
    )
    print()
    print(f"{'step (API process)':45s} {'calls/req':>9s} {'us/req':>8s}")
    covered = 0.0
    steps: dict[str, dict[str, float]] = {}
    for label, _, _ in STEPS:
        spent = (after_steps["ns"].get(label, 0) - before_steps["ns"].get(label, 0)) / 1000 / requests
        count = (after_steps["calls"].get(label, 0) - before_steps["calls"].get(label, 0)) / requests
        if count == 0:
            continue
        covered += 0.0 if label.startswith(" ") else spent
        steps[label] = {"calls_per_request": count, "us_per_request": spent}
        print(f"{label:45s} {count:9.3f} {spent:8.1f}")
    api_cpu = (after_cpu[0] - before_cpu[0]) / requests * 1e6
    print(f"{'all steps above':45s} {'':9s} {covered:8.1f}")
    print(f"{'API process CPU (user + system)':45s} {'':9s} {api_cpu:8.1f}")
    print(f"{'  not in a step: uvicorn, ASGI layers, asyncio':45s} {'':9s} {api_cpu - covered:8.1f}")
    inference_us = None
    if len(processes) > 1:
        inference_cpu = sum(after - before for after, before in zip(after_cpu[1:], before_cpu[1:], strict=True))
        inference_us = inference_cpu / requests * 1e6
        print(f"{'inference process CPU':45s} {'':9s} {inference_us:8.1f}")
    write_json(
        args.json,
        sys.argv,
        {
            "measurement": measured,
            "steps": steps,
            "steps_us": covered,
            "api_cpu_us": api_cpu,
            "not_in_a_step_us": api_cpu - covered,
            "inference_cpu_us": inference_us,
        },
    )


if __name__ == "__main__":
    main()
