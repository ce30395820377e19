"""A loaded version compiled for serving: no `model.predict()` on the request path.

`model.predict()` builds a data pipeline and a step function on every call:
about 90 ms for one 40-day window through a 64-unit LSTM on two CPU cores.
Here the model's forward pass is traced once into a TensorFlow graph with a
fixed input signature and compiled with XLA, and every batch is padded up to
one of a few bucket sizes that are compiled and run once at construction, so
no request ever pays for tracing or compilation. `bench/inference.py` measures
each option side by side; XLA was about three times faster than the plain
graph at batch sizes 1 to 64, and the exported SavedModel no faster than the
plain graph.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from training import features
from training.artifact import LoadedVersion
from training.errors import BrokenVersionError
from training.features import Scaler, WindowSpec

logger = logging.getLogger("stockcast.predictor")

# The largest batch the compiled function runs in one call; larger requests
# are cut into chunks of this size. Matches the default micro-batch size.
DEFAULT_MAX_BATCH_SIZE = 64


def bucket_sizes(max_batch_size: int, growth: int = 4) -> tuple[int, ...]:
    """Batch sizes that get compiled: 1, 4, 16, ... up to `max_batch_size`, which is always one.

    A batch is padded to the smallest bucket that holds it. Each bucket costs
    about half a second of XLA compilation at load, while padding is cheap (a
    64-row batch costs about four times a 1-row one), so few buckets keep
    start-up and model swaps quick.
    """
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
    if growth < 2:
        raise ValueError(f"growth must be at least 2, got {growth}")
    sizes = {max_batch_size}
    size = 1
    while size < max_batch_size:
        sizes.add(size)
        size *= growth
    return tuple(sorted(sizes))


def compile_forward(model: Any, window: int, feature_count: int, jit_compile: bool) -> Callable[[Any], Any]:
    """The model's inference pass as a concrete TensorFlow function of (batch, window, features) float32.

    Calling the concrete function directly skips `tf.function`'s argument
    matching, which is a third of the cost of a batch-1 call.
    """
    import tensorflow as tf

    signature = tf.TensorSpec([None, window, feature_count], tf.float32, name="windows")

    def forward(windows: Any) -> Any:
        return model(windows, training=False)

    return tf.function(forward, input_signature=[signature], jit_compile=jit_compile).get_concrete_function()


class CompiledModel:
    """One served version: raw windows in, forecasts in price units out; safe to call from any thread."""

    def __init__(
        self,
        loaded: LoadedVersion,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        jit_compile: bool = True,
    ) -> None:
        self.metadata: dict[str, Any] = loaded.metadata
        self.name: str = loaded.name
        self.version: int = loaded.version
        self.spec: WindowSpec = loaded.spec
        self.scaler: Scaler = loaded.scaler
        self.batch_sizes: tuple[int, ...] = bucket_sizes(max_batch_size)
        self._model = loaded.model
        started = time.perf_counter()
        self.jit_compiled = jit_compile
        try:
            self._forward = self._compile_and_warm_up(jit_compile)
        except BrokenVersionError:
            raise
        except Exception as error:
            if not jit_compile:
                raise BrokenVersionError(
                    f"{self.name} v{self.version}: inference failed at warm-up: {error}"
                ) from error
            # XLA does not support every op; the plain graph always works.
            logger.warning(
                "%s v%s: XLA compilation failed (%s); serving the plain graph", self.name, self.version, error
            )
            self.jit_compiled = False
            self._forward = self._compile_and_warm_up(jit_compile=False)
        # One pass through the whole path, preprocessing included: a flat
        # window of ones is a valid input for every transform.
        prices = self.predict_prices(np.ones((1, self.spec.window, len(self.spec.features))))
        if not np.all(np.isfinite(prices)):
            raise BrokenVersionError(f"{self.name} v{self.version}: warm-up forecast is not finite")
        self.warmup_seconds = time.perf_counter() - started
        logger.info(
            "%s v%s compiled (xla=%s, batch sizes %s) in %.2f s",
            self.name,
            self.version,
            self.jit_compiled,
            list(self.batch_sizes),
            self.warmup_seconds,
        )

    @property
    def window(self) -> int:
        """Rows per input window."""
        return self.spec.window

    @property
    def horizon(self) -> int:
        """Steps per forecast."""
        return self.spec.horizon

    def _compile_and_warm_up(self, jit_compile: bool) -> Callable[[Any], Any]:
        """Trace, then run every bucket once so that no request compiles anything."""
        forward = compile_forward(self._model, self.spec.window, len(self.spec.features), jit_compile)
        shape = (self.spec.window, len(self.spec.features))
        for size in self.batch_sizes:
            outputs = self._run(forward, np.zeros((size, *shape), dtype=np.float32))
            if outputs.shape != (size, self.spec.horizon) or not np.all(np.isfinite(outputs)):
                raise BrokenVersionError(
                    f"{self.name} v{self.version}: warm-up forecast has shape {outputs.shape} "
                    f"or non-finite values; expected finite ({size}, {self.spec.horizon})"
                )
        return forward

    @staticmethod
    def _run(forward: Callable[[Any], Any], scaled: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        return np.asarray(forward(tf.constant(scaled)).numpy())

    def predict_scaled(self, scaled: np.ndarray) -> np.ndarray:
        """Network outputs (n, horizon) for already scaled float32 inputs (n, window, features)."""
        count = len(scaled)
        largest = self.batch_sizes[-1]
        if count > largest:
            return np.concatenate(
                [self.predict_scaled(scaled[start : start + largest]) for start in range(0, count, largest)]
            )
        if count == 0:
            return np.empty((0, self.spec.horizon), dtype=np.float32)
        bucket = next(size for size in self.batch_sizes if size >= count)
        if bucket != count:
            # Zero rows pad the batch to a compiled shape; their outputs are dropped.
            padded = np.zeros((bucket, *scaled.shape[1:]), dtype=np.float32)
            padded[:count] = scaled
            scaled = padded
        return self._run(self._forward, scaled)[:count]

    def predict_prices(self, windows: np.ndarray) -> np.ndarray:
        """Raw windows (n, window, features), oldest row first, to forecasts (n, horizon) in price units."""
        windows = np.asarray(windows, dtype=np.float64)
        expected = (self.spec.window, len(self.spec.features))
        if windows.ndim != 3 or windows.shape[1:] != expected:
            raise ValueError(
                f"expected windows of shape (n, {expected[0]}, {expected[1]}) "
                f"for features {list(self.spec.features)}, got {windows.shape}"
            )
        scaled = features.scale_inputs(windows, self.spec, self.scaler)
        outputs = self.predict_scaled(scaled)
        return features.outputs_to_prices(windows, outputs, self.spec, self.scaler)
