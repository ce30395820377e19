"""A loaded version served by ONNX Runtime: the same steps around the network as `CompiledModel`, no TensorFlow.

The training process exported the network to `model.onnx` and checked it
against Keras on the version's own calibration and test windows
(`training/onnx_export.py`); such a version is served here. Importing this
module, loading a version and serving it never import TensorFlow or Keras,
so an inference process whose versions all have a checked export holds
neither. See docs/design.md, "Serving path".
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from app.inference.steps import ForecastSteps
from training.errors import BrokenVersionError
from training.features import Scaler
from training.onnx_export import INPUT_NAME, onnx_session
from training.spec import WindowSpec

logger = logging.getLogger("stockcast.inference")


class OnnxModel(ForecastSteps):
    """One served version on an onnxruntime session: raw windows in, forecasts in price units out.

    Any batch size runs as it is (no padding to compiled shapes); a batch
    larger than `max_batch_size` is cut into chunks of it, which bounds one
    call's memory as the TensorFlow engine does. onnxruntime's `run` may be
    called from several threads at once.
    """

    engine = "onnx"
    # Nothing compiles after the load: what `CompiledModel` reports once XLA has taken over.
    jit_compiled = False

    def __init__(
        self, metadata: dict[str, Any], spec: WindowSpec, scaler: Scaler, path: Path, max_batch_size: int
    ) -> None:
        super().__init__(metadata, spec, scaler)
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        self.max_batch_size = max_batch_size
        started = time.perf_counter()
        try:
            self._session: Any = onnx_session(path)
            self._check_signature()
            for size in sorted({1, max_batch_size}):
                self.check_outputs(self.predict_scaled(np.zeros((size, spec.window, len(spec.features)))), size)
            self.check_whole_path()
        except BrokenVersionError:
            raise
        except Exception as error:
            raise BrokenVersionError(f"{self.name} v{self.version}: ONNX model failed at warm-up: {error}") from error
        self.warmup_seconds = time.perf_counter() - started
        logger.info("%s v%s ready in %.3f s (ONNX Runtime)", self.name, self.version, self.warmup_seconds)

    def _check_signature(self) -> None:
        """The graph takes (batch, window, features) under INPUT_NAME, as the metadata says."""
        inputs = self._session.get_inputs()
        expected = [self.spec.window, len(self.spec.features)]
        if len(inputs) != 1 or inputs[0].name != INPUT_NAME or list(inputs[0].shape[1:]) != expected:
            found = [(item.name, item.shape) for item in inputs]
            raise BrokenVersionError(
                f"{self.name} v{self.version}: model.onnx takes {found}; expected '{INPUT_NAME}' of (n, {expected})"
            )

    def wait_for_compilation(self, timeout: float | None = None) -> bool:
        """Nothing to wait for: the session is whole once constructed."""
        return True

    def run_batch(self, scaled: np.ndarray) -> np.ndarray:
        """The network on 1 to `max_batch_size` scaled windows, in the ONNX Runtime session."""
        inputs = np.ascontiguousarray(scaled, dtype=np.float32)
        return np.asarray(self._session.run(None, {INPUT_NAME: inputs})[0])
