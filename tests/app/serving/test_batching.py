"""Micro-batching: every request gets its own rows, errors reach every waiter, no request waits needlessly.

The fake predict functions record the batches they see; no test asserts a
duration. Tests that could hang if a request were held use a wait bound far
longer than their `asyncio.wait_for` limit, so holding shows up as a timeout.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import pytest

from app.inference.engine import CompiledModel
from app.serving.batching import BatcherClosedError, MicroBatcher
from tests.helpers import real_windows, run
from training.artifact import load_version
from training.store import ModelStore

T = TypeVar("T")

# Longer than any test may take: reaching it means a request was held.
FOREVER_US = 600_000_000
LIVENESS_SECONDS = 60


class Recorder:
    """A predict function that returns each window's first value and records batch sizes and threads."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.threads: set[int] = set()
        self.release = threading.Event()
        self.release.set()

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        self.release.wait()
        self.batches.append(len(windows))
        self.threads.add(threading.get_ident())
        return windows[:, 0, :1] * 10.0


def window(value: float) -> np.ndarray:
    """One (1, 3, 2) window whose forecast from Recorder is value * 10."""
    return np.full((1, 3, 2), value)


async def started_batch(batcher: MicroBatcher, recorder: Recorder) -> asyncio.Task[np.ndarray]:
    """Submit one request and keep its batch running (blocked) until `recorder.release` is set."""
    recorder.release.clear()
    task = asyncio.ensure_future(batcher.submit(window(-1.0)))
    while batcher.batches_run == 0:
        await asyncio.sleep(0)
    return task


def test_concurrent_requests_each_get_their_own_rows() -> None:
    recorder = Recorder()

    async def scenario() -> list[np.ndarray]:
        batcher = MicroBatcher(recorder, max_batch_size=8, max_wait_us=2000)
        results = await asyncio.gather(*(batcher.submit(window(index)) for index in range(50)))
        await batcher.close()
        return results

    results = run(scenario())
    assert [float(result[0, 0]) for result in results] == [index * 10.0 for index in range(50)]
    assert sum(recorder.batches) == 50
    assert max(recorder.batches) > 1


def test_requests_with_several_windows_are_split_back() -> None:
    recorder = Recorder()

    async def scenario() -> list[np.ndarray]:
        batcher = MicroBatcher(recorder, max_batch_size=16, max_wait_us=2000)
        requests = [np.concatenate([window(10 * size + row) for row in range(size)]) for size in range(1, 8)]
        results = await asyncio.gather(*(batcher.submit(request) for request in requests))
        await batcher.close()
        return results

    for size, result in enumerate(run(scenario()), start=1):
        assert result.shape == (size, 1)
        assert result[:, 0].tolist() == [(10 * size + row) * 10.0 for row in range(size)]


def test_batches_never_exceed_max_batch_size() -> None:
    recorder = Recorder()

    async def scenario() -> list[np.ndarray]:
        batcher = MicroBatcher(recorder, max_batch_size=4, max_wait_us=FOREVER_US)
        first = await started_batch(batcher, recorder)
        rest = [asyncio.ensure_future(batcher.submit(window(index))) for index in range(9)]
        await asyncio.sleep(0)
        recorder.release.set()
        # Full batches start at once; the last, partial one waits for close().
        results = await asyncio.gather(first, *rest[:8])
        await batcher.close()
        return [*results, await rest[8]]

    results = run(scenario())
    assert len(results) == 10
    assert [float(result[0, 0]) for result in results[1:]] == [index * 10.0 for index in range(9)]
    assert recorder.batches == [1, 4, 4, 1]


def test_a_lone_request_on_an_idle_batcher_starts_at_once() -> None:
    recorder = Recorder()

    async def scenario() -> np.ndarray:
        batcher = MicroBatcher(recorder, max_batch_size=64, max_wait_us=FOREVER_US)
        first = await batcher.submit(window(1.0))
        second = await batcher.submit(window(2.0))
        await batcher.close()
        return np.concatenate([first, second])

    assert run(scenario())[:, 0].tolist() == [10.0, 20.0]
    assert recorder.batches == [1, 1]


def test_a_full_batch_starts_without_waiting_for_the_bound() -> None:
    recorder = Recorder()

    async def scenario() -> list[np.ndarray]:
        batcher = MicroBatcher(recorder, max_batch_size=4, max_wait_us=FOREVER_US)
        first = await started_batch(batcher, recorder)
        rest = [asyncio.ensure_future(batcher.submit(window(index))) for index in range(4)]
        await asyncio.sleep(0)
        recorder.release.set()
        results = await asyncio.gather(first, *rest)
        assert recorder.batches == [1, 4]
        await batcher.close()
        return results

    assert len(run(scenario())) == 5


def test_a_partial_batch_starts_when_its_oldest_request_is_due() -> None:
    recorder = Recorder()

    async def scenario() -> list[np.ndarray]:
        batcher = MicroBatcher(recorder, max_batch_size=64, max_wait_us=20_000)
        first = await started_batch(batcher, recorder)
        rest = [asyncio.ensure_future(batcher.submit(window(index))) for index in range(3)]
        await asyncio.sleep(0)
        recorder.release.set()
        # No close() before the answers: only the wait bound can start them.
        results = await asyncio.gather(first, *rest)
        await batcher.close()
        return results

    assert len(run(scenario())) == 4
    assert recorder.batches == [1, 3]


def test_an_error_reaches_every_request_of_the_batch() -> None:
    calls: list[int] = []

    def failing(windows: np.ndarray) -> np.ndarray:
        calls.append(len(windows))
        raise ValueError("model exploded")

    async def scenario() -> list[np.ndarray | BaseException]:
        batcher = MicroBatcher(failing, max_batch_size=4, max_wait_us=2000)
        results = await asyncio.gather(*(batcher.submit(window(index)) for index in range(10)), return_exceptions=True)
        await batcher.close()
        return results

    results = run(scenario())
    assert all(isinstance(result, ValueError) and str(result) == "model exploded" for result in results)
    assert sum(calls) == 10


def test_the_batcher_keeps_serving_after_an_error() -> None:
    state = {"fail": True}

    def flaky(windows: np.ndarray) -> np.ndarray:
        if state["fail"]:
            state["fail"] = False
            raise RuntimeError("transient")
        return windows[:, 0, :1]

    async def scenario() -> np.ndarray:
        batcher = MicroBatcher(flaky, max_batch_size=4, max_wait_us=2000)
        with pytest.raises(RuntimeError, match="transient"):
            await batcher.submit(window(1.0))
        result = await batcher.submit(window(2.0))
        await batcher.close()
        return result

    assert run(scenario()).tolist() == [[2.0]]


@pytest.mark.parametrize("with_finish", [False, True])
def test_a_predict_that_loses_rows_is_an_error(with_finish: bool) -> None:
    # Checked before `finish` sees the outputs, so the message names predict, not a numpy broadcast.
    finish = Steps().finish if with_finish else None

    async def scenario() -> None:
        batcher = MicroBatcher(lambda windows: windows[:1, 0, :1], max_batch_size=4, max_wait_us=2000, finish=finish)
        with pytest.raises(RuntimeError, match="predict returned 1 rows for 2 windows"):
            await batcher.submit(np.concatenate([window(1.0), window(2.0)]))
        await batcher.close()

    run(scenario())


def test_inference_runs_on_one_thread_off_the_event_loop() -> None:
    recorder = Recorder()

    async def scenario() -> None:
        batcher = MicroBatcher(recorder, max_batch_size=4, max_wait_us=2000)
        await asyncio.gather(*(batcher.submit(window(index)) for index in range(20)))
        await batcher.close()

    run(scenario())
    assert len(recorder.threads) == 1
    assert threading.get_ident() not in recorder.threads


@pytest.mark.parametrize(("max_batch_size", "max_wait_us"), [(1, 2000), (8, 0)])
def test_batching_off_means_one_call_per_request(max_batch_size: int, max_wait_us: int) -> None:
    recorder = Recorder()

    async def scenario() -> list[np.ndarray]:
        batcher = MicroBatcher(recorder, max_batch_size=max_batch_size, max_wait_us=max_wait_us)
        results = await asyncio.gather(*(batcher.submit(window(index)) for index in range(12)))
        await batcher.close()
        return results

    results = run(scenario())
    assert [float(result[0, 0]) for result in results] == [index * 10.0 for index in range(12)]
    assert recorder.batches == [1] * 12


def test_requests_of_different_shapes_are_not_stacked() -> None:
    recorder = Recorder()

    async def scenario() -> list[np.ndarray]:
        batcher = MicroBatcher(recorder, max_batch_size=8, max_wait_us=FOREVER_US)
        first = await started_batch(batcher, recorder)
        same = asyncio.ensure_future(batcher.submit(window(1.0)))
        other = asyncio.ensure_future(batcher.submit(np.full((1, 5, 2), 2.0)))
        await asyncio.sleep(0)
        recorder.release.set()
        await first
        await batcher.close()
        return [await same, await other]

    same, other = run(scenario())
    assert (same.tolist(), other.tolist()) == ([[10.0]], [[20.0]])
    assert recorder.batches == [1, 1, 1]


def test_a_cancelled_request_does_not_disturb_the_others() -> None:
    recorder = Recorder()

    async def scenario() -> list[np.ndarray]:
        batcher = MicroBatcher(recorder, max_batch_size=8, max_wait_us=FOREVER_US)
        first = await started_batch(batcher, recorder)
        gone = asyncio.ensure_future(batcher.submit(window(99.0)))
        kept = [asyncio.ensure_future(batcher.submit(window(index))) for index in range(3)]
        await asyncio.sleep(0)
        gone.cancel()
        recorder.release.set()
        await first
        await batcher.close()
        return [await task for task in kept]

    assert [float(result[0, 0]) for result in run(scenario())] == [0.0, 10.0, 20.0]
    assert recorder.batches == [1, 3]


def test_close_answers_pending_requests_then_refuses_new_ones() -> None:
    recorder = Recorder()

    async def scenario() -> list[np.ndarray]:
        batcher = MicroBatcher(recorder, max_batch_size=8, max_wait_us=FOREVER_US)
        first = await started_batch(batcher, recorder)
        pending = [asyncio.ensure_future(batcher.submit(window(index))) for index in range(3)]
        await asyncio.sleep(0)
        recorder.release.set()
        await batcher.close()
        with pytest.raises(BatcherClosedError, match="no longer served"):
            await batcher.submit(window(5.0))
        return [await first, *[await task for task in pending]]

    assert len(run(scenario())) == 4


class Steps:
    """`prepare` and `finish` steps that record the thread they ran on and can be made to fail."""

    def __init__(self) -> None:
        self.threads: dict[str, set[int]] = {"prepare": set(), "finish": set()}
        self.fail: str | None = None

    def prepare(self, windows: np.ndarray) -> np.ndarray:
        self.threads["prepare"].add(threading.get_ident())
        if self.fail == "prepare":
            raise ValueError("prepare failed")
        return windows + 1.0

    def finish(self, windows: np.ndarray, outputs: np.ndarray) -> np.ndarray:
        self.threads["finish"].add(threading.get_ident())
        if self.fail == "finish":
            raise ValueError("finish failed")
        # Uses the raw windows too, as the real finish does (prices from the last close).
        return np.concatenate([outputs, windows[:, -1, :1]], axis=1)


@pytest.mark.parametrize(("max_batch_size", "max_wait_us"), [(8, 2000), (1, 2000)])
def test_prepare_and_finish_run_on_the_event_loop_around_predict(max_batch_size: int, max_wait_us: int) -> None:
    recorder, steps = Recorder(), Steps()

    async def scenario() -> list[np.ndarray]:
        batcher = MicroBatcher(recorder, max_batch_size, max_wait_us, prepare=steps.prepare, finish=steps.finish)
        results = await asyncio.gather(*(batcher.submit(window(index)) for index in range(20)))
        await batcher.close()
        return results

    results = run(scenario())
    # Each request: predict saw its prepared window (value + 1), finish added its raw value.
    assert [result.tolist() for result in results] == [[[(index + 1) * 10.0, float(index)]] for index in range(20)]
    assert steps.threads["prepare"] == steps.threads["finish"] == {threading.get_ident()}
    assert threading.get_ident() not in recorder.threads


@pytest.mark.parametrize("step", ["prepare", "finish"])
def test_a_failing_prepare_or_finish_reaches_every_request_and_serving_goes_on(step: str) -> None:
    recorder, steps = Recorder(), Steps()

    async def scenario() -> tuple[list[np.ndarray | BaseException], np.ndarray]:
        batcher = MicroBatcher(recorder, 4, 2000, prepare=steps.prepare, finish=steps.finish)
        steps.fail = step
        failed = await asyncio.gather(*(batcher.submit(window(index)) for index in range(10)), return_exceptions=True)
        steps.fail = None
        after = await batcher.submit(window(3.0))
        await batcher.close()
        return failed, after

    failed, after = run(scenario())
    assert all(isinstance(result, ValueError) and str(result) == f"{step} failed" for result in failed)
    assert after.tolist() == [[40.0, 3.0]]


@pytest.mark.parametrize(("max_batch_size", "max_wait_us"), [(0, 100), (4, -1)])
def test_invalid_settings_are_refused(max_batch_size: int, max_wait_us: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        MicroBatcher(Recorder(), max_batch_size=max_batch_size, max_wait_us=max_wait_us)


@pytest.mark.parametrize("split", [False, True], ids=["whole", "split"])
@pytest.mark.parametrize("name", ["tiny", "tiny-h5"])
@pytest.mark.tf
def test_real_model_under_concurrency_matches_single_predictions(
    model_store: ModelStore, name: str, split: bool
) -> None:
    compiled = CompiledModel(load_version(model_store, name, 1), max_batch_size=16)
    windows = real_windows(compiled.spec, 50)
    predict: Callable[[np.ndarray], np.ndarray]
    if split:
        # The registry's wiring: scaling and bounds on the event loop, only the network on the thread.
        reference, predict = compiled.forecast, compiled.predict_scaled
        prepare, finish = compiled.prepare, compiled.finish
    else:
        reference, predict = compiled.predict_prices, compiled.predict_prices
        prepare, finish = None, None
    singles = [reference(one[None]) for one in windows]

    async def scenario() -> tuple[list[np.ndarray], MicroBatcher]:
        batcher = MicroBatcher(predict, 16, 2000, prepare=prepare, finish=finish)
        results = await asyncio.gather(*(batcher.submit(one[None]) for one in windows))
        await batcher.close()
        return results, batcher

    results, batcher = run(scenario())
    for single, batched in zip(singles, results, strict=True):
        assert batched.shape == single.shape
        assert (batched.shape[0], batched.shape[-1]) == (1, compiled.spec.horizon)
        np.testing.assert_allclose(batched, single, rtol=1e-5)
    assert batcher.batches_run < 50


class Later:
    """A `predict_later` that answers on the event loop a moment later, like the inference process."""

    def __init__(self, fail_with: Exception | None = None, raise_at_call: bool = False) -> None:
        self.batches: list[int] = []
        self.threads: set[int] = set()
        self.in_flight = 0
        self.most_in_flight = 0
        self.fail_with = fail_with
        self.raise_at_call = raise_at_call

    def __call__(self, windows: np.ndarray) -> asyncio.Future[np.ndarray]:
        self.threads.add(threading.get_ident())
        if self.raise_at_call and self.fail_with is not None:
            raise self.fail_with
        self.batches.append(len(windows))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()

        def answer() -> None:
            self.in_flight -= 1
            if self.fail_with is not None:
                future.set_exception(self.fail_with)
            else:
                future.set_result(windows[:, 0, :1] * 10.0)

        asyncio.get_running_loop().call_later(0.001, answer)
        return future


def test_predict_later_runs_on_the_loop_with_one_batch_in_flight() -> None:
    later = Later()

    async def scenario() -> list[np.ndarray]:
        batcher = MicroBatcher(predict_later=later, max_batch_size=8, max_wait_us=2000)
        results = await asyncio.gather(*(batcher.submit(window(index)) for index in range(50)))
        await batcher.close()
        return results

    results = run(scenario())
    assert [float(result[0, 0]) for result in results] == [index * 10.0 for index in range(50)]
    assert sum(later.batches) == 50 and max(later.batches) > 1
    assert later.most_in_flight == 1
    assert later.threads == {threading.get_ident()}


@pytest.mark.parametrize("raise_at_call", [False, True], ids=["failed-future", "raised"])
def test_predict_later_errors_reach_every_request_and_serving_goes_on(raise_at_call: bool) -> None:
    later = Later(fail_with=RuntimeError("worker gone"), raise_at_call=raise_at_call)

    async def scenario() -> tuple[list[np.ndarray | BaseException], np.ndarray]:
        batcher = MicroBatcher(predict_later=later, max_batch_size=4, max_wait_us=2000)
        failed = await asyncio.gather(*(batcher.submit(window(index)) for index in range(10)), return_exceptions=True)
        later.fail_with = None
        after = await batcher.submit(window(4.0))
        await batcher.close()
        return failed, after

    failed, after = run(scenario())
    assert all(isinstance(result, RuntimeError) and str(result) == "worker gone" for result in failed)
    assert after.tolist() == [[40.0]]


def test_exactly_one_of_predict_and_predict_later_is_taken() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        MicroBatcher(Recorder(), predict_later=Later())
    with pytest.raises(ValueError, match="exactly one"):
        MicroBatcher(max_batch_size=4, max_wait_us=100)
