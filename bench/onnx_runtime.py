"""How to run the exported networks on ONNX Runtime: unrolled or not, how many threads.

    .venv/bin/python bench/onnx_runtime.py [--units 64] [--window 40] [--rounds 5] [--json OUT]

For each architecture (a built, untrained stockcast network: latency does
not depend on the weights' values), the ONNX export as Keras writes it and,
for GRU and SimpleRNN, the export of an unrolled clone with the same
weights (`training.onnx_export.unrolled_clone`). Each is timed at batch 1,
16 and 64 under four session settings: 1 or 2 intra-op threads, with and
without spinning, and onnxruntime's default (every core, spinning).
Wall microseconds and process CPU microseconds per call; the median of
interleaved rounds, so that other load hits every variant alike. "ratio"
is the variant's wall time over the served setting's (unrolled where it
applies, 1 thread, no spinning) in the same run.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from harness import add_json_option, write_json

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BATCHES = (1, 16, 64)
# (name, intra-op threads, spinning); 0 threads: onnxruntime picks (one per core).
SETTINGS = (("1 thread", 1, False), ("2 threads", 2, False), ("2 threads spinning", 2, True), ("default", 0, True))
SERVED_SETTING = "1 thread"


def session(path: Path, threads: int, spinning: bool) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def time_calls(run: Any, inputs: np.ndarray, calls: int) -> tuple[float, float]:
    """Median-free single measurement: (wall us, CPU us) per call over `calls` calls."""
    for _ in range(10):
        run(None, {"windows": inputs})
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(calls):
        run(None, {"windows": inputs})
    return (time.perf_counter() - wall) / calls * 1e6, (time.process_time() - cpu) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--units", type=int, default=64)
    parser.add_argument("--window", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5)
    add_json_option(parser)
    arguments = parser.parse_args()
    import tensorflow as tf

    from training.models import build_model
    from training.onnx_export import INPUT_NAME, OPSET, unrolled_clone

    logging.getLogger("tf2onnx").setLevel(logging.WARNING)
    inputs = np.random.default_rng(0).standard_normal((max(BATCHES), arguments.window, 5)).astype(np.float32)
    folder = Path(tempfile.mkdtemp(prefix="bench-onnx-"))
    variants: dict[str, Path] = {}
    exports: dict[str, float] = {}
    for architecture in ("lstm", "gru", "simple_rnn"):
        model = build_model(architecture, arguments.window, 5, horizon=1, units=arguments.units)
        forms = [("as exported", model)]
        if architecture != "lstm":
            forms.append(("unrolled", unrolled_clone(model)[0]))
        for form, network in forms:
            path = folder / f"{architecture}-{form.replace(' ', '-')}.onnx"
            signature = [tf.TensorSpec([None, arguments.window, 5], tf.float32, name=INPUT_NAME)]
            started = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                network.export(str(path), format="onnx", verbose=False, input_signature=signature, opset_version=OPSET)
            exports[f"{architecture} {form}"] = time.perf_counter() - started
            variants[f"{architecture} {form}"] = path
    sessions = {
        (variant, name): session(path, threads, spinning)
        for variant, path in variants.items()
        for name, threads, spinning in SETTINGS
    }
    samples: dict[tuple[str, str, int], list[tuple[float, float]]] = {}
    for _ in range(arguments.rounds):
        for (variant, name), runner in sessions.items():
            for batch in BATCHES:
                calls = 300 if batch == 1 else 60
                samples.setdefault((variant, name, batch), []).append(time_calls(runner.run, inputs[:batch], calls))
    figures: dict[str, Any] = {"export_seconds": {key: round(value, 2) for key, value in exports.items()}, "rows": []}
    print(f"{'network':<26} {'setting':<20} {'batch':>5} {'wall us':>9} {'CPU us':>9} {'ratio':>6}")
    medians = {
        key: (statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs))
        for key, runs in samples.items()
    }
    for (variant, name, batch), (wall, cpu) in medians.items():
        architecture = variant.split()[0]
        served_variant = f"{architecture} unrolled" if architecture != "lstm" else variant
        reference = medians[(served_variant, SERVED_SETTING, batch)][0]
        print(f"{variant:<26} {name:<20} {batch:>5} {wall:>9.0f} {cpu:>9.0f} {wall / reference:>6.2f}")
        figures["rows"].append(
            {
                "network": variant,
                "setting": name,
                "batch": batch,
                "wall_us": wall,
                "cpu_us": cpu,
                "ratio": wall / reference,
            }
        )
    print("export seconds:", figures["export_seconds"])
    write_json(arguments.json, sys.argv, figures)


if __name__ == "__main__":
    main()
