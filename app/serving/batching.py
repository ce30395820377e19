"""Server-side micro-batching: concurrent requests for one version share an inference call.

A forward pass over many windows costs little more than one over a single
window, so requests that arrive together are stacked into one batch. A request
that finds the batcher idle starts at once: a lone request never waits for
company. Requests that arrive while a batch runs accumulate; the next batch
starts when it holds `max_batch_size` windows or its oldest request has waited
`max_wait_us`. A request larger than a batch is served in batch-sized slices,
and after each slice it goes to the back of the queue, so one client's huge
batch cannot hold every other client's forecast behind it. One batcher has at
most one batch in flight, computed elsewhere (`predict_later`, the inference
process) so that the event loop never blocks. See docs/design.md, "Serving path".
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.core import metrics
from training.errors import StockcastError

PredictLater = Callable[[np.ndarray], "asyncio.Future[np.ndarray]"]


class BatcherClosedError(StockcastError):
    """The batcher was closed (its version was swapped out) before the request was submitted."""

    # Transient: the caller should retry and will reach the version now served.
    status_code = 503


@dataclass
class _Request:
    """One submitted request waiting for its rows of the batch results."""

    windows: np.ndarray
    future: asyncio.Future[np.ndarray]
    arrived: float
    taken: int = 0
    """Windows already put in a batch (slices go in order)."""
    answered: list[np.ndarray] = field(default_factory=list)
    """Outputs of the slices answered so far, in order."""

    @property
    def left(self) -> int:
        """Windows not yet put in a batch."""
        return len(self.windows) - self.taken


@dataclass
class _Slice:
    """Rows `start:end` of one request's windows, in a batch."""

    request: _Request
    start: int
    end: int


@dataclass
class _Outcome:
    """What a batch came to: outputs or the error that stopped them."""

    outputs: np.ndarray | None = None
    error: BaseException | None = None


class MicroBatcher:
    """Stacks concurrent `submit` calls into batches for `predict_later`; see the module docstring.

    `predict_later(inputs)` is called on the event loop with a batch of
    windows and returns a future of its outputs, one row per window; each
    request gets its own rows, or the batch's error. With `max_batch_size=1`
    or `max_wait_us=0` batching is off: each request is one call.
    """

    def __init__(self, predict_later: PredictLater, max_batch_size: int = 64, max_wait_us: int = 1000) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        if max_wait_us < 0:
            raise ValueError(f"max_wait_us must be 0 or more, got {max_wait_us}")
        self.predict_later = predict_later
        self.max_batch_size = max_batch_size
        self.max_wait_us = max_wait_us
        self.batching = max_batch_size > 1 and max_wait_us > 0
        self._max_wait_seconds = max_wait_us / 1e6
        self._pending: deque[_Request] = deque()
        self._pending_rows = 0
        # Pending requests of which some slices already ran.
        self._sliced = 0
        self._running: asyncio.Future[np.ndarray] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._started_at = 0.0
        # Sizes of the batches run so far (/models shows them).
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
            started = loop.time()
            outputs = await self.predict_later(windows)
            if metrics.ENABLED:
                metrics.LOOP.observe_batch(len(windows), 0.0, loop.time() - started)
            return self._checked(windows, outputs)
        self._loop = loop
        request = _Request(windows=windows, future=loop.create_future(), arrived=loop.time())
        idle = self._running is None and not self._pending
        self._pending.append(request)
        self._pending_rows += len(windows)
        self._dispatch(now=idle)
        return await request.future

    def _dispatch(self, now: bool = False) -> None:
        """Start a batch if none is running and the pending requests are due (event-loop thread only)."""
        if self._running is not None or not self._pending or self._loop is None:
            return
        loop = self._loop
        due = self._pending[0].arrived + self._max_wait_seconds
        # A sliced request has waited already: its next slice goes as soon as the batch in flight is back.
        if not (now or self._closed or self._sliced or self._pending_rows >= self.max_batch_size or loop.time() >= due):
            if self._timer is None:
                self._timer = loop.call_at(due, self._on_timer)
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch = self._take_batch()
        if not batch:
            return
        inputs = self._inputs(batch)
        self.batches_run += 1
        self.windows_run += len(inputs)
        self._started_at = loop.time()
        try:
            self._running = self.predict_later(inputs)
        except Exception as error:
            self._hand_out(batch, inputs, _Outcome(error=error))
            self._dispatch()
            return
        self._running.add_done_callback(lambda done: self._finish(batch, inputs, done))

    @staticmethod
    def _inputs(batch: list[_Slice]) -> np.ndarray:
        """The batch's windows as one array (no copy for a single whole request)."""
        parts = [part.request.windows[part.start : part.end] for part in batch]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _take_batch(self) -> list[_Slice]:
        """Up to max_batch_size windows of one shape, in queue order; a request not finished goes to the back."""
        batch: list[_Slice] = []
        back: list[_Request] = []
        rows = 0
        shape: tuple[int, ...] | None = None
        while self._pending and rows < self.max_batch_size:
            request = self._pending[0]
            if request.future.done():
                # The caller went away (a cancelled request) or a slice failed: skip its work.
                self._pending.popleft()
                self._pending_rows -= request.left
                self._sliced -= request.taken > 0
                continue
            if shape is not None and request.windows.shape[1:] != shape:
                break
            self._pending.popleft()
            self._sliced -= request.taken > 0
            size = min(request.left, self.max_batch_size - rows)
            batch.append(_Slice(request, request.taken, request.taken + size))
            request.taken += size
            self._pending_rows -= size
            rows += size
            shape = request.windows.shape[1:]
            if request.left:
                back.append(request)
        # Behind the requests that waited: the others get their turn before its next slice.
        self._pending.extend(back)
        self._sliced += len(back)
        return batch

    def _on_timer(self) -> None:
        self._timer = None
        self._dispatch()

    def _finish(self, batch: list[_Slice], inputs: np.ndarray, done: asyncio.Future[np.ndarray]) -> None:
        """Hand each request its own rows (or the batch's error), then start the next batch."""
        self._running = None
        if metrics.ENABLED and self._loop is not None:
            now = self._loop.time()
            waited = self._started_at - batch[0].request.arrived
            metrics.LOOP.observe_batch(len(inputs), waited, now - self._started_at)
        if done.cancelled():
            outcome = _Outcome(error=BatcherClosedError("inference was cancelled"))
        elif done.exception() is not None:
            outcome = _Outcome(error=done.exception())
        else:
            outcome = _Outcome(outputs=done.result())
        self._hand_out(batch, inputs, outcome)
        self._dispatch()

    @staticmethod
    def _checked(inputs: np.ndarray, outputs: Any) -> np.ndarray:
        """The outputs as an array, once checked to hold one row per window."""
        outputs = np.asarray(outputs)
        if len(outputs) != len(inputs):
            raise RuntimeError(f"predict returned {len(outputs)} rows for {len(inputs)} windows")
        return outputs

    def _hand_out(self, batch: list[_Slice], inputs: np.ndarray, outcome: _Outcome) -> None:
        """Give each request its rows of the batch's outputs (all of them once its last slice is in), or the error."""
        if outcome.error is None:
            try:
                outcome = _Outcome(outputs=self._checked(inputs, outcome.outputs))
            except Exception as error:
                outcome = _Outcome(error=error)
        start = 0
        for part in batch:
            end = start + part.end - part.start
            request = part.request
            if not request.future.done():
                if outcome.error is not None:
                    request.future.set_exception(outcome.error)
                else:
                    assert outcome.outputs is not None
                    request.answered.append(outcome.outputs[start:end])
                    if part.end == len(request.windows):
                        answered = request.answered
                        request.future.set_result(answered[0] if len(answered) == 1 else np.concatenate(answered))
            start = end

    async def close(self) -> None:
        """Stop taking requests and answer the ones already submitted."""
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
