"""How the service starts and how much memory it holds with 1, 100 and 500 models loaded (ONNX Runtime).

    .venv/bin/python bench/model_count.py [--counts 1,100,500] [--engine onnx] [--models-dir DIR] [--json OUT]

The benchmark model (64-unit LSTM, window 40; trained here unless
`--models-dir` names a store with `msft`) is copied into a fresh store as N
models (`m0000`, `m0001`, ...: the same files, each metadata.json naming its
copy), as a desk forecasting a universe of tickers with one model each
would hold. For each N the service (`uvicorn app.main:app`, keys and
metrics as deployed, ledger on) starts on that store and is timed from the
launch to `GET /ready` = 200, which it answers once every model's default
version is loaded in the inference process. Then one /predict per model
checks each answers, and the resident memory of the API process and of the
inference process is read from /proc. Goals of issue 27: the inference
process at most 120 MiB with one model; 500 models ready within 15 s and
within 600 MiB for both processes together.

With `--lazy` the service runs with STOCKCAST_PRELOAD=false instead: it is
ready before any model is loaded, and each model's first /predict loads its
version. The first and the second /predict of every model are timed; the
difference of their medians is what lazy loading adds to a first request.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_model import MODEL_NAME, sample_windows, train_benchmark_model
from harness import add_json_option, http, memory_mib, service_server, serving_processes, write_json

GOAL_ONE_MODEL_INFERENCE_MIB = 120.0
GOAL_500_READY_SECONDS = 15.0
GOAL_500_TOTAL_MIB = 600.0


def copy_models(source: Path, target: Path, count: int) -> list[str]:
    """`count` models in `target`, each version 1 a copy of `source` (a version folder) under its own name."""
    names = [f"m{index:04d}" for index in range(count)]
    metadata = json.loads((source / "metadata.json").read_text())
    for name in names:
        folder = target / name / "1"
        shutil.copytree(source, folder)
        (folder / "metadata.json").write_text(json.dumps({**metadata, "name": name, "version": 1}))
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="1,100,500", help="comma list of model counts")
    parser.add_argument("--engine", default="onnx", help="STOCKCAST_INFERENCE_ENGINE for the service")
    parser.add_argument("--models-dir", type=Path, help=f"store with model '{MODEL_NAME}' (default: train one)")
    parser.add_argument("--timeout", type=float, default=600.0, help="most seconds to wait for /ready")
    parser.add_argument("--lazy", action="store_true", help="STOCKCAST_PRELOAD=false: load on first request")
    add_json_option(parser)
    arguments = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="stockcast-model-count-"))
    rows: list[dict[str, Any]] = []
    try:
        trained = folder / "trained"
        if arguments.models_dir is None:
            train_benchmark_model(trained)
        else:
            shutil.copytree(arguments.models_dir, trained)
        source = max((trained / MODEL_NAME).glob("[0-9]*"), key=lambda path: int(path.name))
        metadata = json.loads((source / "metadata.json").read_text())
        if arguments.engine == "onnx" and not (metadata.get("onnx") or {}).get("ok"):
            sys.exit(f"{source} has no checked model.onnx: {metadata.get('onnx')}")
        window = sample_windows(int(metadata["window"]), tuple(metadata["features"]), 1)[0]
        print(
            f"{'models':>6} {'ready s':>8} {'API MiB':>8} {'inference MiB':>14} {'total MiB':>10} {'/predict':>9}"
            f" {'1st ms':>7} {'2nd ms':>7}"
        )
        for count in [int(part) for part in arguments.counts.split(",")]:
            store = folder / f"models-{count}"
            names = copy_models(source, store, count)
            server = service_server(
                f"service-{count}",
                store,
                folder,
                inference_engine=arguments.engine,
                preload="false" if arguments.lazy else "true",
            )
            server.start(timeout=arguments.timeout)
            try:
                first, second, answered = [], [], 0
                for name in names:
                    for timings in (first, second):
                        started = time.perf_counter()
                        status = http("POST", server.url + "/predict", {"model": name, "window": window})[0]
                        timings.append(time.perf_counter() - started)
                    answered += status == 200
                sizes = [memory_mib(pid)[0] for pid in serving_processes(server.pid)]
            finally:
                server.stop()
            api, inference = sizes[0], sum(sizes[1:])
            row = {
                "models": count,
                "ready_seconds": server.ready_seconds,
                "api_rss_mib": api,
                "inference_rss_mib": inference,
                "total_rss_mib": api + inference,
                "predict_ok": answered,
                "first_predict_ms": statistics.median(first) * 1e3,
                "second_predict_ms": statistics.median(second) * 1e3,
            }
            rows.append(row)
            print(
                f"{count:>6} {server.ready_seconds:>8.1f} {api:>8.0f} {inference:>14.0f} {api + inference:>10.0f}"
                f" {answered:>5}/{count} {row['first_predict_ms']:>7.1f} {row['second_predict_ms']:>7.1f}"
            )
            shutil.rmtree(store, ignore_errors=True)
        by_count = {row["models"]: row for row in rows}
        if 1 in by_count:
            value = by_count[1]["inference_rss_mib"]
            print(
                f"inference process with one model: {value:.0f} MiB (goal <= {GOAL_ONE_MODEL_INFERENCE_MIB:.0f}: "
                f"{'yes' if value <= GOAL_ONE_MODEL_INFERENCE_MIB else 'NO'})"
            )
        if 500 in by_count:
            ready, total = by_count[500]["ready_seconds"], by_count[500]["total_rss_mib"]
            print(
                f"500 models: ready in {ready:.1f} s (goal <= {GOAL_500_READY_SECONDS:.0f}: "
                f"{'yes' if ready <= GOAL_500_READY_SECONDS else 'NO'}), {total:.0f} MiB in all "
                f"(goal <= {GOAL_500_TOTAL_MIB:.0f}: {'yes' if total <= GOAL_500_TOTAL_MIB else 'NO'})"
            )
        write_json(arguments.json, sys.argv, {"engine": arguments.engine, "lazy": arguments.lazy, "rows": rows})
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
