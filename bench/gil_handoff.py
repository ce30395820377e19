"""What a busy event loop does to a network on a thread of the same process: the evidence for the inference process.

    .venv/bin/python bench/gil_handoff.py [--models-dir DIR --model NAME] [--batch 16] [--calls 200]

The service's event loop runs Python almost all the time under load, and a
network on an inference thread of the same process needs the GIL back every
time it leaves C code. (The service ran that way until the networks moved
into their own process, `app/inference/client.py`; this still measures why.)
This runs
one batch on a second thread, `--calls` times, while the main thread is idle
(joins the thread) and while it runs Python (a busy loop, standing in for the
event loop), for two splits of the work:

- `forecast`: scaling, the network, prices and interval bounds, all on the
  inference thread (how the service ran until the split).
- `predict_scaled`: only padding and the network on the inference thread;
  `prepare` and `finish` are timed on the main thread, as the event loop
  runs them.

"slow-down" is the median time against a busy main thread divided by the
median time against an idle one, for the same work in the same run.

A last line times two small steps of the request path back to back and
right after the thread slept 2 ms (as an event loop or inference thread
does between requests): on a virtual machine, work just after an idle
moment can run several times slower.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def time_on_thread(work: Callable[[], Any], calls: int, busy: bool) -> float:
    """Median milliseconds of `work` on a second thread while this thread idles or runs Python."""
    durations: list[float] = []

    def worker() -> None:
        for _ in range(calls):
            started = time.perf_counter()
            work()
            durations.append(time.perf_counter() - started)

    thread = threading.Thread(target=worker)
    thread.start()
    if busy:
        spins = 0
        while thread.is_alive():
            spins += 1
    thread.join()
    return statistics.median(durations) * 1e3


def time_here(work: Callable[[], Any], calls: int, idle_seconds: float = 0.0) -> float:
    """Median seconds of `work` on this thread, each call after `idle_seconds` of sleep (0: back to back)."""
    durations = []
    for _ in range(calls):
        if idle_seconds:
            time.sleep(idle_seconds)
        started = time.perf_counter()
        work()
        durations.append(time.perf_counter() - started)
    return statistics.median(durations)


def main() -> None:
    """Print one table: each split, idle and busy main thread, and the slow-down."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, help="existing store (default: train into a temporary one)")
    parser.add_argument("--model", default="msft", help="model name in the store")
    parser.add_argument("--batch", type=int, default=16, help="windows per call (16: the mean batch at 32 clients)")
    parser.add_argument("--calls", type=int, default=200, help="calls per measurement")
    args = parser.parse_args()

    import tensorflow as tf
    from bench_model import sample_windows, train_benchmark_model  # bench/ is on sys.path

    from app.core.runtime import tune_for_serving
    from app.inference.engine import CompiledModel
    from training.artifact import load_version
    from training.store import ModelStore

    tune_for_serving()  # the service's GIL switch interval
    with tempfile.TemporaryDirectory() as temporary:
        store_root = args.models_dir
        if store_root is None:
            store_root = Path(temporary) / "models"
            train_benchmark_model(store_root, args.model)
        store = ModelStore(store_root)
        compiled = CompiledModel(
            load_version(store, args.model, store.versions(args.model)[-1]), compile_in_background=False
        )
        raw = np.asarray(sample_windows(compiled.spec.window, compiled.spec.features, args.batch))
        scaled = compiled.prepare(raw)
        outputs = compiled.predict_scaled(scaled)
        splits: dict[str, Callable[[], Any]] = {
            "forecast": lambda: compiled.forecast(raw),
            "predict_scaled": lambda: compiled.predict_scaled(scaled),
        }
        print(
            f"batch of {args.batch} windows, {compiled.spec.window} days; engine "
            f"{'xla' if compiled.jit_compiled else 'graph'}; {args.calls} calls per figure; {os.cpu_count()} CPU(s)"
        )
        print()
        header = f"{'on the inference thread':24s} {'idle loop ms':>12s} {'busy loop ms':>12s} {'slow-down':>10s}"
        print(header)
        print("-" * len(header))
        for name, work in splits.items():
            work()
            idle = time_on_thread(work, args.calls, busy=False)
            busy = time_on_thread(work, args.calls, busy=True)
            print(f"{name:24s} {idle:12.3f} {busy:12.3f} {busy / idle:9.1f}x")
        print()
        prepare = time_here(lambda: compiled.prepare(raw), args.calls) * 1e3
        finish = time_here(lambda: compiled.finish(raw, outputs), args.calls) * 1e3
        print(f"on the event loop instead: prepare {prepare:.3f} ms, finish {finish:.3f} ms per batch")
        steps: dict[str, Callable[[], Any]] = {
            "copy of the batch": scaled.copy,
            "tf.constant of the batch": lambda: tf.constant(scaled),
        }
        for name, step in steps.items():
            warm = time_here(step, args.calls) * 1e6
            cold = time_here(step, args.calls, idle_seconds=0.002) * 1e6
            print(f"{name}: {warm:.1f} us back to back, {cold:.1f} us right after 2 ms idle ({cold / warm:.1f}x)")


if __name__ == "__main__":
    main()
