"""Milliseconds per inference call: model.predict vs model(x) vs tf.function vs XLA vs exported SavedModel.

    .venv/bin/python bench/inference.py [--models-dir DIR --model NAME --version N] [--batches 1,16,64] [--json OUT]

One process, one model (the 64-unit LSTM on a 40-day window, trained for
two epochs into a temporary store unless a store is given), every variant on
the same input. The variants are timed in interleaved rounds and the median
round is reported, so that other load on the machine hits all of them alike;
"speed-up" is model.predict's time divided by the variant's, within this run.

- `model.predict`: what tutorial servers call per request.
- `model(x)`: the eager forward pass.
- `tf.function`: the forward pass traced once with a fixed input signature
  `(None, window, features)` float32, called as a concrete function.
- `tf.function + XLA`: the same with `jit_compile=True` (XLA compiles once per
  batch size, hence the bucket padding in `app.inference.engine`).
- `exported SavedModel`: `model.export()` reloaded with `tf.saved_model.load`.
- `CompiledModel.forecast`: what the service runs on TensorFlow: numpy
  preprocessing, padding to a compiled bucket, XLA, conversion back to
  prices and bounds.
- `ONNX Runtime session`: the version's checked `model.onnx` on the
  session settings the service uses (`training.onnx_export.onnx_session`).
- `OnnxModel.forecast`: what the service runs on ONNX Runtime: the same
  steps as `CompiledModel.forecast` around that session (no padding).

"first call" is the one-off cost of tracing/compiling that shape, paid at
warm-up by the service, never by a request.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from harness import add_json_option, write_json

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Each timed round runs a variant for about this long.
ROUND_SECONDS = 0.15


def build_variants(loaded: Any, folder: Path, store: Any) -> dict[str, Callable[[np.ndarray, np.ndarray], Any]]:
    """Each way to run the model, as a function of (raw windows, scaled windows)."""
    import tensorflow as tf

    from app.inference.engine import CompiledModel, compile_forward

    model = loaded.model
    window, feature_count = loaded.spec.window, len(loaded.spec.features)
    graph = compile_forward(model, window, feature_count, jit_compile=False)
    xla = compile_forward(model, window, feature_count, jit_compile=True)
    model.export(folder / "saved_model", verbose=False)
    # Keep the restored object: its variables die with it.
    restored = tf.saved_model.load(str(folder / "saved_model"))
    compiled = CompiledModel(loaded, compile_in_background=False)
    variants: dict[str, Callable[[np.ndarray, np.ndarray], Any]] = {
        "model.predict": lambda raw, scaled: model.predict(scaled, verbose=0),
        "model(x)": lambda raw, scaled: model(scaled, training=False).numpy(),
        "tf.function": lambda raw, scaled: graph(tf.constant(scaled)).numpy(),
        "tf.function + XLA": lambda raw, scaled: xla(tf.constant(scaled)).numpy(),
        "exported SavedModel": lambda raw, scaled: restored.serve(tf.constant(scaled)).numpy(),
        "CompiledModel.forecast": lambda raw, scaled: compiled.forecast(raw),
    }
    from training.artifact import checked_onnx_path

    path = checked_onnx_path(store, loaded.name, loaded.version, loaded.metadata)
    if path is not None:
        from app.inference.onnx_engine import OnnxModel
        from training.onnx_export import INPUT_NAME, onnx_session

        session = onnx_session(path)
        served = OnnxModel(loaded.metadata, loaded.spec, loaded.scaler, path, compiled.max_batch_size)
        variants["ONNX Runtime session"] = lambda raw, scaled: session.run(None, {INPUT_NAME: scaled})[0]
        variants["OnnxModel.forecast"] = lambda raw, scaled: served.forecast(raw)
    else:
        print("the version has no checked model.onnx (python -m app export-onnx): ONNX variants left out")
    return variants


def time_calls(function: Callable[[], Any], calls: int) -> float:
    """Milliseconds per call over `calls` calls."""
    started = time.perf_counter()
    for _ in range(calls):
        function()
    return (time.perf_counter() - started) / calls * 1e3


def main() -> None:
    """Time every variant at each batch size and print one table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, help="existing store (default: train into a temporary one)")
    parser.add_argument("--model", default="msft", help="model name in the store")
    parser.add_argument("--version", type=int, help="version (default: the newest)")
    parser.add_argument("--batches", default="1,16,64", help="comma list of batch sizes")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds per batch size")
    add_json_option(parser)
    args = parser.parse_args()

    from bench_model import train_benchmark_model, sample_windows  # noqa: I001 (bench/ is on sys.path)

    from training import features
    from training.artifact import load_version
    from training.store import ModelStore

    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        store_root = args.models_dir
        if store_root is None:
            store_root = folder / "models"
            started = time.perf_counter()
            train_benchmark_model(store_root, args.model)
            print(f"trained the benchmark model in {time.perf_counter() - started:.1f}s (not counted below)")
        store = ModelStore(store_root)
        version = args.version or store.versions(args.model)[-1]
        loaded = load_version(store, args.model, version)
        spec = loaded.spec
        started = time.perf_counter()
        variants = build_variants(loaded, folder, store)
        print(
            f"model {args.model} v{version}: {loaded.metadata['architecture']} "
            f"{loaded.metadata['hyperparameters']['units']} units, window {spec.window}, "
            f"{len(spec.features)} features, horizon {spec.horizon}; {os.cpu_count()} CPU(s); "
            f"building all variants took {time.perf_counter() - started:.1f}s"
        )
        print()
        header = (
            f"{'variant':30s} {'batch':>5s} {'first call ms':>13s} {'ms/call':>9s} {'us/window':>10s} {'speed-up':>9s}"
        )
        print(header)
        print("-" * len(header))
        results: list[dict[str, object]] = []
        for batch in (int(size) for size in args.batches.split(",")):
            raw = np.asarray(sample_windows(spec.window, spec.features, batch))
            scaled = features.scale_inputs(raw, spec, loaded.scaler)
            reference = loaded.model(scaled, training=False).numpy()
            first_call: dict[str, float] = {}
            calls: dict[str, int] = {}
            for name, variant in variants.items():
                started = time.perf_counter()
                outputs = variant(raw, scaled)
                first_call[name] = (time.perf_counter() - started) * 1e3
                if name in ("CompiledModel.forecast", "OnnxModel.forecast"):
                    outputs = features.outputs_to_prices(raw, reference, spec, loaded.scaler) - outputs[:, 0]
                    assert np.allclose(outputs, 0, atol=1e-3), f"{name} disagrees with model(x)"
                else:
                    assert np.allclose(outputs, reference, atol=1e-4), f"{name} disagrees with model(x)"
                # Size each round from one more (warm) call.
                once = time_calls(partial(variant, raw, scaled), 1)
                calls[name] = max(1, int(ROUND_SECONDS * 1e3 / max(once, 1e-3)))
            rounds: dict[str, list[float]] = {name: [] for name in variants}
            for _ in range(args.rounds):
                for name, variant in variants.items():
                    rounds[name].append(time_calls(partial(variant, raw, scaled), calls[name]))
            medians = {name: statistics.median(values) for name, values in rounds.items()}
            baseline = medians["model.predict"]
            for name, milliseconds in medians.items():
                results.append(
                    {
                        "variant": name,
                        "batch": batch,
                        "first_call_ms": first_call[name],
                        "ms_per_call": milliseconds,
                        "us_per_window": milliseconds * 1e3 / batch,
                        "speed_up": baseline / milliseconds,
                    }
                )
                print(
                    f"{name:30s} {batch:5d} {first_call[name]:13.0f} {milliseconds:9.3f} "
                    f"{milliseconds * 1e3 / batch:10.1f} {baseline / milliseconds:8.1f}x"
                )
            print()
        write_json(args.json, sys.argv, {"model": args.model, "version": version, "results": results})


if __name__ == "__main__":
    main()
