"""Micro-batching: every request gets its own rows, errors reach every waiter, no request waits needlessly.

Every batcher here is wired as the registry wires it, with `predict_later`
only, over `Later`, a fake inference process that records the batches it is
given; no test asserts a duration. Tests that could hang if a request were held
use a wait bound far longer than `run`'s liveness limit, so holding shows up as
a timeout.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest

from app.core import metrics
from app.inference.engine import CompiledModel
from app.serving.batching import BatcherClosedError, MicroBatcher
from tests.helpers import real_windows, run
from training.artifact import load_version
from training.store import ModelStore

# Longer than any test may take: reaching it means a request was held.
FOREVER_US = 600_000_000


def tenfold_first_value(windows: np.ndarray) -> np.ndarray:
    """One output row per window: its first value times ten."""
    return windows[:, 0, :1] * 10.0


class Later:
    """A `predict_later` that answers on the event loop a moment later, like the inference process.

    It records each batch's size, the threads it was called on and how many
    batches were in flight at once. `hold()` keeps its answers back until
    `release()`, so that requests can be queued behind a running batch.
    """

    def __init__(
        self,
        compute: Callable[[np.ndarray], np.ndarray] = tenfold_first_value,
        fail_with: Exception | None = None,
        raise_at_call: bool = False,
    ) -> None:
        self.compute = compute
        self.fail_with = fail_with
        self.raise_at_call = raise_at_call
        self.batches: list[int] = []
        self.threads: set[int] = set()
        self.in_flight = 0
        self.most_in_flight = 0
        self._held: list[Callable[[], None]] | None = None

    def __call__(self, windows: np.ndarray) -> asyncio.Future[np.ndarray]:
        self.threads.add(threading.get_ident())
        self.batches.append(len(windows))
        if self.raise_at_call and self.fail_with is not None:
            raise self.fail_with
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[np.ndarray] = loop.create_future()

        def answer() -> None:
            self.in_flight -= 1
            if self.fail_with is not None:
                future.set_exception(self.fail_with)
            else:
                future.set_result(self.compute(windows))

        if self._held is not None:
            self._held.append(answer)
        else:
            loop.call_later(0.001, answer)
        return future

    def hold(self) -> None:
        """Keep the answers to the next batches back until `release`."""
        self._held = []

    def release(self) -> None:
        """Answer the batches held back, and answer the next ones as they come."""
        held, self._held = self._held or [], None
        for answer in held:
            answer()


def batcher_over(later: Later, max_batch_size: int = 8, max_wait_us: int = 2000) -> MicroBatcher:
    """A batcher constructed as the registry constructs one."""
    return MicroBatcher(predict_later=later, max_batch_size=max_batch_size, max_wait_us=max_wait_us)


def window(value: float, length: int = 3) -> np.ndarray:
    """One (1, length, 2) window whose forecast from Later is value * 10."""
    return np.full((1, length, 2), value)


def answers(
    later: Later, requests: Sequence[np.ndarray], max_batch_size: int = 8, max_wait_us: int = 2000
) -> list[Any]:
    """Submit every request at once to a fresh batcher, close it, and return each answer or error."""

    async def scenario() -> list[Any]:
        batcher = batcher_over(later, max_batch_size, max_wait_us)
        results = await asyncio.gather(*(batcher.submit(request) for request in requests), return_exceptions=True)
        await batcher.close()
        return results

    return run(scenario())


async def queued_behind_a_running_batch(
    batcher: MicroBatcher, later: Later, requests: Sequence[np.ndarray], cancelled: int = 0
) -> tuple[asyncio.Future[np.ndarray], list[asyncio.Future[np.ndarray]]]:
    """Start a batch of one request, queue `requests` while it runs, then let it answer.

    The first `cancelled` queued requests are cancelled before the batch
    answers. Returns the running request and the queued ones, unawaited.
    """
    later.hold()
    first = asyncio.ensure_future(batcher.submit(window(-1.0)))
    while not later.batches:
        await asyncio.sleep(0)
    queued = [asyncio.ensure_future(batcher.submit(request)) for request in requests]
    await asyncio.sleep(0)
    for request in queued[:cancelled]:
        request.cancel()
    later.release()
    return first, queued


def first_values(results: Sequence[np.ndarray]) -> list[float]:
    """The first output of each answer."""
    return [float(result[0, 0]) for result in results]


def test_concurrent_requests_each_get_their_own_rows_one_batch_at_a_time() -> None:
    later = Later()
    results = answers(later, [window(index) for index in range(50)])
    assert first_values(results) == [index * 10.0 for index in range(50)]
    assert sum(later.batches) == 50 and max(later.batches) > 1
    # One batch in flight, started on the event loop's own thread.
    assert later.most_in_flight == 1
    assert later.threads == {threading.get_ident()}


def test_requests_with_several_windows_are_split_back() -> None:
    requests = [np.concatenate([window(10 * size + row) for row in range(size)]) for size in range(1, 8)]
    for size, result in enumerate(answers(Later(), requests, max_batch_size=16), start=1):
        assert result.shape == (size, 1)
        assert result[:, 0].tolist() == [(10 * size + row) * 10.0 for row in range(size)]


def test_batches_never_exceed_max_batch_size() -> None:
    later = Later()

    async def scenario() -> list[np.ndarray]:
        batcher = batcher_over(later, max_batch_size=4, max_wait_us=FOREVER_US)
        first, rest = await queued_behind_a_running_batch(batcher, later, [window(index) for index in range(9)])
        # Full batches start at once; the last, partial one waits for close().
        results = await asyncio.gather(first, *rest[:8])
        await batcher.close()
        return [*results, await rest[8]]

    results = run(scenario())
    assert len(results) == 10
    assert first_values(results[1:]) == [index * 10.0 for index in range(9)]
    assert later.batches == [1, 4, 4, 1]


def test_a_lone_request_on_an_idle_batcher_starts_at_once() -> None:
    later = Later()

    async def scenario() -> list[np.ndarray]:
        batcher = batcher_over(later, max_batch_size=64, max_wait_us=FOREVER_US)
        first = await batcher.submit(window(1.0))
        second = await batcher.submit(window(2.0))
        await batcher.close()
        return [first, second]

    assert first_values(run(scenario())) == [10.0, 20.0]
    assert later.batches == [1, 1]


@pytest.mark.parametrize(
    ("max_batch_size", "max_wait_us", "queued"),
    [(4, FOREVER_US, 4), (64, 20_000, 3)],
    ids=["full-batch-starts-without-waiting", "partial-batch-starts-when-its-oldest-is-due"],
)
def test_a_queued_batch_starts_when_full_or_due(max_batch_size: int, max_wait_us: int, queued: int) -> None:
    later = Later()

    async def scenario() -> list[np.ndarray]:
        batcher = batcher_over(later, max_batch_size, max_wait_us)
        first, rest = await queued_behind_a_running_batch(batcher, later, [window(index) for index in range(queued)])
        # No close() before the answers: only a full batch or the wait bound can start them.
        results = await asyncio.gather(first, *rest)
        await batcher.close()
        return results

    assert len(run(scenario())) == queued + 1
    assert later.batches == [1, queued]


@pytest.mark.parametrize("raise_at_call", [False, True], ids=["failed-future", "raised"])
def test_errors_reach_every_request_of_the_batch_and_serving_goes_on(raise_at_call: bool) -> None:
    later = Later(fail_with=RuntimeError("worker gone"), raise_at_call=raise_at_call)

    async def scenario() -> tuple[list[np.ndarray | BaseException], np.ndarray]:
        batcher = batcher_over(later, max_batch_size=4)
        failed = await asyncio.gather(*(batcher.submit(window(index)) for index in range(10)), return_exceptions=True)
        later.fail_with = None
        after = await batcher.submit(window(4.0))
        await batcher.close()
        return failed, after

    failed, after = run(scenario())
    assert all(isinstance(result, RuntimeError) and str(result) == "worker gone" for result in failed)
    assert sum(later.batches) == 11
    assert after.tolist() == [[40.0]]


@pytest.mark.parametrize(("max_batch_size", "max_wait_us"), [(4, 2000), (1, 2000)], ids=["batching", "off"])
def test_a_predict_that_loses_rows_is_an_error(max_batch_size: int, max_wait_us: int) -> None:
    later = Later(compute=lambda windows: windows[:1, 0, :1])
    (result,) = answers(later, [np.concatenate([window(1.0), window(2.0)])], max_batch_size, max_wait_us)
    assert isinstance(result, RuntimeError) and str(result) == "predict returned 1 rows for 2 windows"


@pytest.mark.parametrize(("max_batch_size", "max_wait_us"), [(1, 2000), (8, 0)])
def test_batching_off_means_one_call_per_request(max_batch_size: int, max_wait_us: int) -> None:
    later = Later()
    results = answers(later, [window(index) for index in range(12)], max_batch_size, max_wait_us)
    assert first_values(results) == [index * 10.0 for index in range(12)]
    assert later.batches == [1] * 12


def test_requests_of_different_shapes_are_not_stacked() -> None:
    later = Later()

    async def scenario() -> list[np.ndarray]:
        batcher = batcher_over(later, max_batch_size=8, max_wait_us=FOREVER_US)
        first, (same, other) = await queued_behind_a_running_batch(batcher, later, [window(1.0), window(2.0, 5)])
        await first
        await batcher.close()
        return [await same, await other]

    same, other = run(scenario())
    assert (same.tolist(), other.tolist()) == ([[10.0]], [[20.0]])
    assert later.batches == [1, 1, 1]


def test_a_cancelled_request_does_not_disturb_the_others() -> None:
    later = Later()

    async def scenario() -> list[np.ndarray]:
        batcher = batcher_over(later, max_batch_size=8, max_wait_us=FOREVER_US)
        requests = [window(99.0), *(window(index) for index in range(3))]
        first, (_, *kept) = await queued_behind_a_running_batch(batcher, later, requests, cancelled=1)
        await first
        await batcher.close()
        return [await request for request in kept]

    assert first_values(run(scenario())) == [0.0, 10.0, 20.0]
    assert later.batches == [1, 3]


def test_close_answers_pending_requests_then_refuses_new_ones() -> None:
    later = Later()

    async def scenario() -> list[np.ndarray]:
        batcher = batcher_over(later, max_batch_size=8, max_wait_us=FOREVER_US)
        first, pending = await queued_behind_a_running_batch(batcher, later, [window(index) for index in range(3)])
        await batcher.close()
        with pytest.raises(BatcherClosedError, match="no longer served"):
            await batcher.submit(window(5.0))
        return [await first, *[await request for request in pending]]

    assert len(run(scenario())) == 4


def test_batch_sizes_are_counted_and_observed(monkeypatch: pytest.MonkeyPatch) -> None:
    observed = metrics.LoopMetrics()
    monkeypatch.setattr(metrics, "LOOP", observed)
    monkeypatch.setattr(metrics, "ENABLED", True)
    later = Later()

    async def scenario() -> MicroBatcher:
        batcher = batcher_over(later, max_batch_size=4, max_wait_us=FOREVER_US)
        await asyncio.gather(*(batcher.submit(window(index)) for index in range(9)))
        await batcher.close()
        return batcher

    batcher = run(scenario())
    assert later.batches == [1, 4, 4]
    assert (batcher.batches_run, batcher.windows_run) == (3, 9)
    samples = {sample.name: sample.value for sample in observed.batch_windows.family().samples}
    assert (samples["stockcast_predict_batch_windows_count"], samples["stockcast_predict_batch_windows_sum"]) == (3, 9)


@pytest.mark.parametrize(("max_batch_size", "max_wait_us"), [(0, 100), (4, -1)])
def test_invalid_settings_are_refused(max_batch_size: int, max_wait_us: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        batcher_over(Later(), max_batch_size, max_wait_us)


@pytest.mark.parametrize("name", ["tiny", "tiny-h5"])
@pytest.mark.tf
def test_real_model_under_concurrency_matches_single_predictions(model_store: ModelStore, name: str) -> None:
    compiled = CompiledModel(load_version(model_store, name, 1), max_batch_size=16)
    windows = real_windows(compiled.spec, 50)
    singles = [compiled.forecast(one[None]) for one in windows]
    # The inference process's part: the whole forecast of each batch (scaling, network, prices, bounds).
    later = Later(compute=compiled.forecast)
    results = answers(later, [one[None] for one in windows], max_batch_size=16)
    for single, batched in zip(singles, results, strict=True):
        assert batched.shape == single.shape
        assert (batched.shape[0], batched.shape[-1]) == (1, compiled.spec.horizon)
        np.testing.assert_allclose(batched, single, rtol=1e-5)
    assert len(later.batches) < 50


def test_a_request_larger_than_a_batch_is_sliced_and_others_go_between_its_slices() -> None:
    # Issue 23 finding 12: a batch larger than the micro-batch ran alone, holding every other client behind it.
    later = Later()
    big = np.concatenate([window(float(row)) for row in range(40)])

    async def scenario() -> tuple[np.ndarray, np.ndarray, list[int]]:
        batcher = batcher_over(later, max_batch_size=8, max_wait_us=FOREVER_US)
        _, (large, small) = await queued_behind_a_running_batch(batcher, later, [big, window(99.0)])
        small_answer = await small
        batches_when_small_answered = list(later.batches)
        large_answer = await large
        await batcher.close()
        return large_answer, small_answer, batches_when_small_answered

    large, small, seen = run(scenario())
    assert large[:, 0].tolist() == [row * 10.0 for row in range(40)]
    assert first_values([small]) == [990.0]
    # The small request rides in the second slice's batch, long before the large one's last slice.
    assert seen[:3] == [1, 8, 8] and len(seen) < len(later.batches)
    assert later.batches == [1, 8, 8, 8, 8, 8, 1]
