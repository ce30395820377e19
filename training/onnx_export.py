"""A version's network as ONNX (`model.onnx` beside `model.keras`), checked against Keras before it is kept.

The inference process serves a version with ONNX Runtime when its metadata
says the export was checked (`metadata["onnx"]["ok"]`), and with TensorFlow
otherwise, so an export that fails or drifts from Keras costs speed, never a
wrong forecast. Exporting needs TensorFlow, tf2onnx and onnxruntime and runs
on CPU: a graph traced on a GPU carries cuDNN ops that ONNX has no match for
(keras#21799). See docs/design.md, "Serving path".
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger("stockcast.training")

ONNX_FILE = "model.onnx"
# The input's name in the exported graph; the inference process feeds it by this name.
INPUT_NAME = "windows"
# Opset 17 maps LSTM and GRU to native ops and is read by every onnxruntime this project pins.
OPSET = 17
# Largest |ONNX - Keras| over the checked windows, relative to the largest |Keras| output.
PARITY_TOLERANCE = 1e-5
# Recurrent layers whose ONNX form is a `Loop` unless unrolled: an unrolled graph of the same
# weights runs faster at small batches (docs/benchmarks.md); LSTM maps to the native LSTM op.
UNROLLED_LAYERS = ("GRU", "SimpleRNN")


def max_relative_difference(got: np.ndarray, expected: np.ndarray) -> float:
    """Largest |got - expected| relative to the largest |expected|.

    Relative to the outputs' scale, not element by element: scaled targets
    cross zero, and an output of 1e-7 off by 1e-12 is no disagreement.
    """
    got, expected = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    if got.shape != expected.shape:
        raise ValueError(f"ONNX outputs have shape {got.shape}, Keras outputs {expected.shape}")
    if not expected.size:
        return 0.0
    scale = max(float(np.max(np.abs(expected))), float(np.finfo(np.float32).tiny))
    return float(np.max(np.abs(got - expected))) / scale


def unrolled_clone(model: Any) -> tuple[Any, bool]:
    """The same network with GRU and SimpleRNN layers unrolled over the fixed window, and whether any were.

    Same weights, same outputs: unrolling changes how the graph is written,
    not what it computes. LSTM layers are left as they are.
    """
    import keras

    config = model.get_config()
    unrolled = False
    for layer in config.get("layers", []):
        if layer.get("class_name") in UNROLLED_LAYERS:
            layer["config"]["unroll"] = True
            unrolled = True
    if not unrolled:
        return model, False
    clone = keras.Model.from_config(config)
    clone.set_weights(model.get_weights())
    return clone, True


def converter_versions() -> dict[str, str]:
    """Versions of the libraries that wrote and checked an ONNX file."""
    import onnx
    import onnxruntime
    import tf2onnx

    return {"tf2onnx": tf2onnx.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def export_network(model: Any, path: Path, window: int, feature_count: int) -> bool:
    """Write `model` as ONNX to `path` (batch size free, window and features fixed); True if unrolled."""
    import tensorflow as tf

    serving, unrolled = unrolled_clone(model)
    signature = [tf.TensorSpec([None, window, feature_count], tf.float32, name=INPUT_NAME)]
    # tf2onnx logs every rewriter pass at INFO.
    logging.getLogger("tf2onnx").setLevel(logging.WARNING)
    with warnings.catch_warnings():
        # Keras's tf2onnx patch probes `np.object`, which numpy 2 warns about.
        warnings.simplefilter("ignore", FutureWarning)
        serving.export(str(path), format="onnx", verbose=False, input_signature=signature, opset_version=OPSET)
    return unrolled


# One thread per session, none spinning: at batch sizes 1 to 64 a second thread cost more CPU per
# request than it saved in time, and the inference process shares the box with the API process
# (measured in docs/benchmarks.md, "ONNX Runtime threads").
SESSION_THREADS = 1


def onnx_session(path: Path, threads: int = SESSION_THREADS) -> Any:
    """An onnxruntime CPU session for `path`: sequential, `threads` intra-op threads that sleep when idle."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    # Spinning threads burn a core between requests for a few microseconds less latency.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # The CPU arena keeps megabytes per session for the largest batch it has seen; without it
    # a session costs a tenth of that, at the same speed, and hundreds of versions fit in memory.
    options.enable_cpu_mem_arena = False
    options.enable_mem_pattern = False
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def check_parity(path: Path, model: Any, scaled_windows: np.ndarray) -> tuple[float, float]:
    """(max |ONNX - Keras|, max relative difference) of the two networks' outputs on `scaled_windows`."""
    from training.models import predict_outputs

    inputs = np.asarray(scaled_windows, dtype=np.float32)
    expected = predict_outputs(model, inputs)
    session = onnx_session(path)
    got = np.concatenate(
        [session.run(None, {INPUT_NAME: inputs[start : start + 1024]})[0] for start in range(0, len(inputs), 1024)]
    )
    if got.shape != expected.shape:
        raise ValueError(f"ONNX outputs have shape {got.shape}, Keras outputs {expected.shape}")
    return float(np.max(np.abs(got - expected))), max_relative_difference(got, expected)


def export_checked(
    model: Any,
    folder: Path,
    scaled_windows: np.ndarray,
    window: int,
    feature_count: int,
    tolerance: float = PARITY_TOLERANCE,
) -> dict[str, Any]:
    """Export `model` to `folder/model.onnx` and check it on `scaled_windows`: the metadata's "onnx" block.

    The file stays only when the check passes (`ok` true); otherwise it is
    removed and `reason` says why, so the version is served by TensorFlow.
    Never raises for a failed export: the Keras version is whole without it.
    """
    path = folder / ONNX_FILE
    block: dict[str, Any] = {"file": ONNX_FILE, "opset": OPSET, "tolerance": tolerance, "ok": False}
    if len(scaled_windows) == 0:
        return {**block, "reason": "no windows to check the export on"}
    try:
        block["converters"] = converter_versions()
        block["unrolled"] = export_network(model, path, window, feature_count)
        max_abs, max_rel = check_parity(path, model, scaled_windows)
    except Exception as error:
        with contextlib.suppress(OSError):
            os.unlink(path)
        logger.warning("ONNX export failed; the version will be served by TensorFlow: %s", error)
        return {**block, "reason": f"export failed: {type(error).__name__}: {error}"}
    block.update(windows_checked=len(scaled_windows), max_abs_diff=max_abs, max_rel_diff=max_rel)
    if not max_rel <= tolerance:
        with contextlib.suppress(OSError):
            os.unlink(path)
        logger.warning("ONNX export differs from Keras by %.2e (> %.0e); served by TensorFlow", max_rel, tolerance)
        return {**block, "reason": f"max relative difference {max_rel:.3g} is over the tolerance {tolerance:g}"}
    from training.files import sha256_of

    return {**block, "ok": True, "sha256": sha256_of(path)}
