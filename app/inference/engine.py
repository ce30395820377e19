"""A loaded version compiled for serving: no `model.predict()` on the request path.

`model.predict()` builds a data pipeline and a step function on every call.
Here the forward pass is traced once into a graph with a fixed input
signature `(None, window, features)` and called as a concrete function. The
plain graph serves from the moment the version is loaded; the same graph
compiled with XLA takes over once it is compiled for a few bucket sizes, to
which every batch is padded, so no request pays for tracing or compiling.
See docs/design.md, "Serving path" (figures in docs/benchmarks.md).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.core.config import default
from app.inference.steps import ForecastSteps
from training.artifact import LoadedVersion
from training.errors import BrokenVersionError

logger = logging.getLogger("stockcast.inference")
_XLA_COMPILE_LOCK = threading.Lock()

# The largest batch the compiled function runs in one call; larger requests
# are cut into chunks of this size. The default micro-batch size (Settings).
DEFAULT_MAX_BATCH_SIZE: int = default("max_batch_size")


def bucket_sizes(max_batch_size: int) -> tuple[int, ...]:
    """Batch sizes that get compiled: 1, 2, 4, 8, ... up to `max_batch_size`, which is always one.

    A batch is padded to the smallest bucket that holds it, and padding costs
    nearly as much as real rows: doubling buckets waste at most half a batch,
    and the few of them compile in the background, so they do not delay
    readiness. The measurements behind the choice: docs/design.md.
    """
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
    sizes = {max_batch_size}
    size = 1
    while size < max_batch_size:
        sizes.add(size)
        size *= 2
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


@dataclass(frozen=True)
class _Engine:
    """A compiled forward pass and the batch sizes it runs at; swapped as one object."""

    forward: Callable[[Any], Any]
    # Batches are padded up to one of these (XLA compiles per shape); None:
    # any size runs as it is (the plain graph takes every batch size).
    buckets: tuple[int, ...] | None
    xla: bool


class CompiledModel(ForecastSteps):
    """One served version: raw windows in, forecasts in price units out; safe to call from any thread.

    Construction traces the plain graph and runs it once, so the version can
    take traffic within a fraction of a second. With `jit_compile`, the XLA
    version of the same graph is then compiled for every bucket size, checked
    against the plain graph, and swapped in; in a background thread when
    `compile_in_background` (the default: compiling does not delay
    readiness), otherwise before the constructor returns. A
    model that XLA cannot compile keeps serving the plain graph.
    """

    def __init__(
        self,
        loaded: LoadedVersion,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        jit_compile: bool = True,
        compile_in_background: bool = True,
    ) -> None:
        super().__init__(loaded.metadata, loaded.spec, loaded.scaler)
        self.max_batch_size = max_batch_size
        self.batch_sizes: tuple[int, ...] = bucket_sizes(max_batch_size)
        self._model = loaded.model
        started = time.perf_counter()
        try:
            plain = compile_forward(self._model, self.spec.window, len(self.spec.features), jit_compile=False)
            self._engine = _Engine(forward=plain, buckets=None, xla=False)
            # The plain graph is optimised once per new shape: the two extremes.
            for size in sorted({1, max_batch_size}):
                self._check_warm_up(self._engine, size)
            self.check_whole_path()
        except BrokenVersionError:
            raise
        except Exception as error:
            raise BrokenVersionError(f"{self.name} v{self.version}: inference failed at warm-up: {error}") from error
        self.warmup_seconds = time.perf_counter() - started
        self.compile_seconds: float | None = None
        self._compiler: threading.Thread | None = None
        if jit_compile:
            if compile_in_background:
                self._compiler = threading.Thread(
                    target=self._switch_to_xla, name=f"xla-compile-{self.name}-v{self.version}"
                )
                self._compiler.start()
            else:
                self._switch_to_xla()
        logger.info(
            "%s v%s ready in %.2f s (plain graph)%s",
            self.name,
            self.version,
            self.warmup_seconds,
            "; compiling XLA in the background" if self._compiler is not None else "",
        )

    @property
    def jit_compiled(self) -> bool:
        """True once requests run on the XLA-compiled graph."""
        return self._engine.xla

    @property
    def engine(self) -> str:
        """What runs this version's network now: "xla" or "tensorflow" (the plain graph)."""
        return "xla" if self._engine.xla else "tensorflow"

    def wait_for_compilation(self, timeout: float | None = None) -> bool:
        """Block until the XLA compilation has finished (or failed); True if it has."""
        if self._compiler is not None:
            self._compiler.join(timeout)
            return not self._compiler.is_alive()
        return True

    def _check_warm_up(self, engine: _Engine, size: int) -> np.ndarray:
        """Run one batch of zeros and check the outputs' shape and finiteness."""
        inputs = np.zeros((size, self.spec.window, len(self.spec.features)), dtype=np.float32)
        return self.check_outputs(self._run(engine, inputs), size)

    def _switch_to_xla(self) -> None:
        """Compile every bucket with XLA, check it against the plain graph, then serve it."""
        # One compilation at a time: two versions loading together made LLVM
        # report "Corruption of the global PassRegistry" here.
        with _XLA_COMPILE_LOCK:
            self._compile_xla()

    def _compile_xla(self) -> None:
        started = time.perf_counter()
        try:
            forward = compile_forward(self._model, self.spec.window, len(self.spec.features), jit_compile=True)
            engine = _Engine(forward=forward, buckets=self.batch_sizes, xla=True)
            for size in self.batch_sizes:
                self._check_warm_up(engine, size)
            # Both graphs must agree on a real-looking input before the swap.
            probe = np.random.default_rng(0).normal(size=(3, self.spec.window, len(self.spec.features)))
            probe = probe.astype(np.float32)
            expected = self._run(self._engine, probe)
            got = self._run(engine, probe)
            if not np.allclose(got, expected, rtol=1e-4, atol=1e-4):
                raise ValueError(f"XLA outputs differ from the plain graph by {np.abs(got - expected).max():.2e}")
        except Exception as error:
            # XLA does not support every op; the plain graph always works.
            logger.warning("%s v%s: XLA not used (%s); serving the plain graph", self.name, self.version, error)
            return
        self._engine = engine
        self.compile_seconds = time.perf_counter() - started
        logger.info(
            "%s v%s now serves XLA (batch sizes %s), compiled in %.2f s",
            self.name,
            self.version,
            list(self.batch_sizes),
            self.compile_seconds,
        )

    @staticmethod
    def _run(engine: _Engine, scaled: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        return np.asarray(engine.forward(tf.constant(scaled)).numpy())

    def run_batch(self, scaled: np.ndarray) -> np.ndarray:
        """The network on 1 to `max_batch_size` scaled windows, padded to a compiled bucket under XLA."""
        # Read once: the background compiler may swap the engine meanwhile.
        engine = self._engine
        count = len(scaled)
        if engine.buckets is not None:
            bucket = next(size for size in engine.buckets if size >= count)
            if bucket != count:
                # Zero rows pad the batch to a compiled shape; their outputs are dropped.
                padded = np.zeros((bucket, *scaled.shape[1:]), dtype=np.float32)
                padded[:count] = scaled
                return self._run(engine, padded)[:count]
        return self._run(engine, scaled)
