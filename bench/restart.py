"""How long forecasts stop after the inference process is killed (kill -9) under load: ONNX Runtime vs TensorFlow.

    .venv/bin/python bench/restart.py [--repeats 3] [--threads 4] [--models-dir DIR] [--json OUT]

For each engine (STOCKCAST_INFERENCE_ENGINE=onnx, then tensorflow) and
each repeat, the service starts on a store holding the benchmark model
(trained here unless `--models-dir` names a store with `msft`), `--threads`
client threads POST /predict back to back, and after two seconds of that
the inference process gets SIGKILL. The outage is the time from the kill to
the first 200 answered after it (the API process restarts the inference
process, which loads the version again); the answers that were not 200
meanwhile are counted. A fresh service per repeat: the restart back-off
grows with deaths in quick succession, which would blur the comparison.
The engines take turns within each repeat; medians are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bench_model import MODEL_NAME, sample_windows, train_benchmark_model
from harness import Server, add_json_option, service_server, serving_processes, write_json

ENGINES = ("onnx", "tensorflow")


def drive(url: str, body: bytes, stop: threading.Event, answers: list[tuple[float, float, int]]) -> None:
    """POST `body` to `url` until `stop`, recording (sent, answered, status) of each request (0: no answer)."""
    while not stop.is_set():
        sent = time.perf_counter()
        request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                answer.read()
                status = answer.status
        except urllib.error.HTTPError as error:
            status = error.code
        except OSError:
            status = 0
        answers.append((sent, time.perf_counter(), status))
        if status != 200:
            time.sleep(0.005)


def one_outage(server: Server, body: bytes, threads: int) -> dict[str, float]:
    """Drive the server, kill its inference process, and time until a forecast answers again.

    "Again": a 200 to a request sent after the first failed answer, so that a
    forecast already computed when the kill landed does not count.
    """
    answers: list[tuple[float, float, int]] = []
    stop = threading.Event()
    workers = [
        threading.Thread(target=drive, args=(server.url + "/predict", body, stop, answers)) for _ in range(threads)
    ]
    for worker in workers:
        worker.start()
    try:
        time.sleep(2.0)
        inference = serving_processes(server.pid)[1]
        killed = time.perf_counter()
        os.kill(inference, signal.SIGKILL)
        deadline = killed + 120
        while time.perf_counter() < deadline and recovery(answers, killed) is None:
            time.sleep(0.01)
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    recovered = recovery(answers, killed)
    outage = (recovered if recovered is not None else float("nan")) - killed
    return {
        "outage_seconds": outage,
        "failed_answers": sum(status != 200 for sent, answered, status in answers if answered > killed),
        "answers_before": sum(answered <= killed for _, answered, _ in answers),
    }


def recovery(answers: list[tuple[float, float, int]], killed: float) -> float | None:
    """When the first 200 came to a request sent after the first failure since `killed`; None before then."""
    answers = sorted(answers, key=lambda answer: answer[1])
    failed = next((answered for _, answered, status in answers if answered > killed and status != 200), None)
    if failed is None:
        return None
    return next((answered for sent, answered, status in answers if sent > failed and status == 200), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=4, help="client threads sending /predict back to back")
    parser.add_argument("--models-dir", type=Path, help=f"store with model '{MODEL_NAME}' (default: train one)")
    add_json_option(parser)
    arguments = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="stockcast-restart-"))
    results: dict[str, list[dict[str, float]]] = {engine: [] for engine in ENGINES}
    try:
        store = folder / "models"
        if arguments.models_dir is None:
            train_benchmark_model(store)
        else:
            shutil.copytree(arguments.models_dir, store)
        metadata = json.loads(next((store / MODEL_NAME).glob("*/metadata.json")).read_text())
        window = sample_windows(int(metadata["window"]), tuple(metadata["features"]), 1)[0]
        body = json.dumps({"model": MODEL_NAME, "window": window}).encode()
        for repeat in range(arguments.repeats):
            for engine in ENGINES if repeat % 2 == 0 else tuple(reversed(ENGINES)):
                server = service_server(f"{engine}-{repeat}", store, folder, inference_engine=engine)
                server.start()
                try:
                    outcome = one_outage(server, body, arguments.threads)
                finally:
                    server.stop()
                results[engine].append(outcome)
                print(
                    f"{engine:10s} repeat {repeat + 1}: forecasts again {outcome['outage_seconds']:.2f} s after the"
                    f" kill; {outcome['failed_answers']:.0f} answers not 200 meanwhile"
                )
        summary: dict[str, Any] = {}
        for engine, outcomes in results.items():
            summary[engine] = {
                "median_outage_seconds": statistics.median(outcome["outage_seconds"] for outcome in outcomes),
                "median_failed_answers": statistics.median(outcome["failed_answers"] for outcome in outcomes),
            }
        onnx, tf = summary["onnx"]["median_outage_seconds"], summary["tensorflow"]["median_outage_seconds"]
        print(f"median outage: ONNX {onnx:.2f} s, TensorFlow {tf:.2f} s ({tf / onnx:.1f}x longer on TensorFlow)")
        write_json(arguments.json, sys.argv, {"runs": results, "summary": summary})
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
