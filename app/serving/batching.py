"""Server-side micro-batching: concurrent requests for one version share an inference call.

One forward pass over 32 windows costs about as much as three passes over one
window, so requests that arrive together are stacked into one batch. The
policy follows TF Serving's batching and BentoML's adaptive batching, with
one change so that a lone request never waits:

- A request that finds the batcher idle (nothing running, nothing pending)
  starts at once, alone. Requests that arrive while a batch is running
  accumulate; there is nothing to gain by starting them earlier, since the
  single inference thread is busy.
- When the thread is free and requests are pending, a batch starts as soon
  as it holds `max_batch_size` windows, or when its oldest request has
  waited `max_wait_us` since it arrived, whichever comes first. A request
  is never held for company longer than that bound once the thread could
  run it; requests that arrived during a running batch have usually waited
  longer already and so start the moment it ends.
- Requests are taken whole and in arrival order; a request with more windows
  than `max_batch_size` runs as a batch of its own.

Inference runs either on one dedicated thread per batcher (`predict`, a
blocking call) or elsewhere (`predict_later`, which returns a future: the
service's inference process). Either way the event loop never blocks, and
one batcher never has two batches in flight. With `max_batch_size=1` or
`max_wait_us=0` batching is off: each request is one call.

The optional `prepare` and `finish` steps (scaling the batch in, prices and
bounds out) run on the event loop, once per batch, and only `predict` runs
on the inference thread. (The service's inference process runs all three
steps itself and takes none here: `app/inference/client.py`.) With a
thread, that split is about the GIL, not the arithmetic:
vectorised numpy over a batch releases the GIL inside each large operation,
and every time the inference thread wants it back while the event loop runs
Python it waits up to the switch interval. Measured with the benchmark model
at 16 windows (`bench/gil_handoff.py`): against a busy main thread the whole
forecast on the inference thread took 4.6 ms (1.5 ms against an idle one),
the network call alone 2.1 ms, and the two numpy steps cost the event loop
about 0.12 ms per batch.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.core import metrics
from training.errors import StockcastError

Predict = Callable[[Any], np.ndarray]
PredictLater = Callable[[Any], "asyncio.Future[np.ndarray]"]
Prepare = Callable[[np.ndarray], Any]
Finish = Callable[[np.ndarray, np.ndarray], np.ndarray]


class BatcherClosedError(StockcastError):
    """The batcher was closed (its version was swapped out) before the request was submitted."""

    # Transient: the caller should retry and will reach the version now served.
    status_code = 503


@dataclass
class _Request:
    """One submitted request waiting for its rows of a batch result."""

    windows: np.ndarray
    future: asyncio.Future[np.ndarray]
    arrived: float


@dataclass
class _Outcome:
    """What a batch came to: outputs or the error that stopped them."""

    outputs: np.ndarray | None = None
    error: BaseException | None = None


class MicroBatcher:
    """Stacks concurrent `submit` calls into batches for `predict`; see the module docstring.

    For a batch of windows `inputs`, the result is
    `finish(inputs, predict(prepare(inputs)))`, with one row per window;
    without `prepare` and `finish` it is `predict(inputs)`. Give either
    `predict` (run on the batcher's thread) or `predict_later` (called on the
    event loop; returns a future of the outputs).
    """

    def __init__(
        self,
        predict: Predict | None = None,
        max_batch_size: int = 64,
        max_wait_us: int = 1000,
        prepare: Prepare | None = None,
        finish: Finish | None = None,
        predict_later: PredictLater | None = None,
    ) -> None:
        if (predict is None) == (predict_later is None):
            raise ValueError("give exactly one of predict and predict_later")
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        if max_wait_us < 0:
            raise ValueError(f"max_wait_us must be 0 or more, got {max_wait_us}")
        self.predict = predict
        self.predict_later = predict_later
        self.prepare = prepare
        self.finish = finish
        self.max_batch_size = max_batch_size
        self.max_wait_us = max_wait_us
        self.batching = max_batch_size > 1 and max_wait_us > 0
        self._max_wait_seconds = max_wait_us / 1e6
        self._executor = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="stockcast-inference") if predict is not None else None
        )
        self._pending: deque[_Request] = deque()
        self._pending_rows = 0
        self._running: asyncio.Future[np.ndarray] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._started_at = 0.0
        # Sizes of the batches run so far: cheap to keep, and what tests and
        # benchmarks look at to see the batching work.
        self.batches_run = 0
        self.windows_run = 0

    async def submit(self, windows: np.ndarray) -> np.ndarray:
        """Forecasts for `windows` (n, ...), computed in a batch with other pending requests."""
        if self._closed:
            raise BatcherClosedError("this model version is no longer served; retry the request")
        windows = np.asarray(windows)
        if windows.ndim < 1:
            raise ValueError(f"windows must be an array of shape (n, ...), got a scalar {windows!r}")
        loop = asyncio.get_running_loop()
        if not self.batching:
            self.batches_run += 1
            self.windows_run += len(windows)
            prepared = self.prepare(windows) if self.prepare is not None else windows
            started = loop.time()
            outputs = await self._start(loop, prepared)
            if metrics.ENABLED:
                metrics.LOOP.observe_batch(len(windows), 0.0, loop.time() - started)
            return self._finished(windows, outputs)
        self._loop = loop
        request = _Request(windows=windows, future=loop.create_future(), arrived=loop.time())
        idle = self._running is None and not self._pending
        self._pending.append(request)
        self._pending_rows += len(windows)
        self._dispatch(now=idle)
        return await request.future

    def _dispatch(self, now: bool = False) -> None:
        """Start a batch if the thread is free and the pending requests are due (event-loop thread only)."""
        if self._running is not None or not self._pending or self._loop is None:
            return
        loop = self._loop
        due = self._pending[0].arrived + self._max_wait_seconds
        if not (now or self._closed or self._pending_rows >= self.max_batch_size or loop.time() >= due):
            if self._timer is None:
                self._timer = loop.call_at(due, self._on_timer)
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch = self._take_batch()
        if not batch:
            return
        inputs = batch[0].windows if len(batch) == 1 else np.concatenate([request.windows for request in batch])
        self.batches_run += 1
        self.windows_run += len(inputs)
        self._started_at = loop.time()
        try:
            prepared = self.prepare(inputs) if self.prepare is not None else inputs
            self._running = self._start(loop, prepared)
        except Exception as error:
            self._hand_out(batch, inputs, _Outcome(error=error))
            self._dispatch()
            return
        self._running.add_done_callback(lambda done: self._finish(batch, inputs, done))

    def _start(self, loop: asyncio.AbstractEventLoop, prepared: Any) -> asyncio.Future[np.ndarray]:
        """Start inference on a prepared batch; the future of its outputs."""
        if self.predict_later is not None:
            return self.predict_later(prepared)
        assert self.predict is not None
        return loop.run_in_executor(self._executor, self.predict, prepared)

    def _take_batch(self) -> list[_Request]:
        """Whole requests in arrival order, up to max_batch_size windows of one shape."""
        batch: list[_Request] = []
        rows = 0
        shape: tuple[int, ...] | None = None
        while self._pending:
            request = self._pending[0]
            if request.future.done():
                # The caller went away (a cancelled request): skip its work.
                self._pending.popleft()
                self._pending_rows -= len(request.windows)
                continue
            size = len(request.windows)
            if batch and (rows + size > self.max_batch_size or request.windows.shape[1:] != shape):
                break
            self._pending.popleft()
            self._pending_rows -= size
            batch.append(request)
            rows += size
            shape = request.windows.shape[1:]
        return batch

    def _on_timer(self) -> None:
        self._timer = None
        self._dispatch()

    def _finish(self, batch: list[_Request], inputs: np.ndarray, done: asyncio.Future[np.ndarray]) -> None:
        """Hand each request its own rows (or the batch's error), then start the next batch."""
        self._running = None
        if metrics.ENABLED and self._loop is not None:
            now = self._loop.time()
            metrics.LOOP.observe_batch(len(inputs), self._started_at - batch[0].arrived, now - self._started_at)
        if done.cancelled():
            outcome = _Outcome(error=BatcherClosedError("inference was cancelled"))
        elif done.exception() is not None:
            outcome = _Outcome(error=done.exception())
        else:
            outcome = _Outcome(outputs=done.result())
        self._hand_out(batch, inputs, outcome)
        self._dispatch()

    def _finished(self, inputs: np.ndarray, outputs: Any) -> np.ndarray:
        """`finish(inputs, outputs)` on the event-loop thread, once `predict` is checked to give one row per window."""
        outputs = np.asarray(outputs)
        if len(outputs) != len(inputs):
            raise RuntimeError(f"predict returned {len(outputs)} rows for {len(inputs)} windows")
        return np.asarray(self.finish(inputs, outputs)) if self.finish is not None else outputs

    def _hand_out(self, batch: list[_Request], inputs: np.ndarray, outcome: _Outcome) -> None:
        """`finish` the batch's outputs and give each request its rows, or every request the error."""
        if outcome.error is None:
            try:
                outcome = _Outcome(outputs=self._finished(inputs, outcome.outputs))
            except Exception as error:
                outcome = _Outcome(error=error)
        start = 0
        for request in batch:
            end = start + len(request.windows)
            if not request.future.done():
                if outcome.error is not None:
                    request.future.set_exception(outcome.error)
                else:
                    assert outcome.outputs is not None
                    request.future.set_result(outcome.outputs[start:end])
            start = end

    async def close(self) -> None:
        """Stop taking requests, finish the ones already submitted, and release the thread (if any)."""
        self._closed = True
        while self._running is not None or self._pending:
            if self._running is None:
                self._dispatch(now=True)
                if self._running is None:
                    break
            with contextlib.suppress(Exception):
                await asyncio.shield(self._running)
            # Let the done callback hand out results before looking again.
            await asyncio.sleep(0)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._executor is not None:
            self._executor.shutdown(wait=False)
