"""The inference process: real spawned worker, real Keras models, real kill -9.

Outputs through the process must equal the Keras model's own; a broken
version is refused with its reason; a killed worker fails the calls waiting
on it with 503, comes back by itself and serves the same handles again.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest

from app.batching import MicroBatcher
from app.inference_process import InferenceProcess, InferenceUnavailableError, RemoteModel
from app.inference_worker import INFERENCE_PROCESS_NAME
from app.predictor import ForecastSteps
from tests.app.test_batching import run
from tests.app.test_predictor import real_windows
from training.artifact import load_preprocessing, load_version
from training.errors import BrokenVersionError
from training.store import ModelStore


def steps_for(store: ModelStore, name: str, version: int = 1) -> ForecastSteps:
    return ForecastSteps(*load_preprocessing(store, name, version))


async def until(condition: object, seconds: float = 120.0) -> None:
    """Poll `condition()` until true; fail after `seconds`."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("name", ["tiny", "tiny-h5"])
def test_outputs_equal_the_keras_model_s_own(model_store: ModelStore, name: str) -> None:
    keras_version = load_version(model_store, name, 1)
    steps = steps_for(model_store, name)
    windows = real_windows(steps.spec, 12)
    expected = keras_version.model.predict(steps.prepare(windows), verbose=0)

    async def scenario() -> tuple[np.ndarray, list[np.ndarray], str, int | None]:
        process = InferenceProcess(model_store.root)
        await process.start()
        try:
            handle = await process.load(name, 1, max_batch_size=8)
            whole = await process.predict(handle, steps.prepare(windows))  # 12 rows: two chunks of 8 and 4
            singles = [await process.predict(handle, steps.prepare(one[None])) for one in windows]
            pid = process.pid
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        finally:
            await process.stop()
        return whole, singles, comm, pid

    whole, singles, comm, pid = run(scenario())
    np.testing.assert_allclose(whole, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.concatenate(singles), expected, rtol=1e-4, atol=1e-5)
    assert comm == INFERENCE_PROCESS_NAME
    assert pid is not None and not Path(f"/proc/{pid}").exists()


def test_a_batcher_over_the_process_answers_like_the_whole_path_in_one_process(model_store: ModelStore) -> None:
    steps = steps_for(model_store, "tiny-h5")
    keras_version = load_version(model_store, "tiny-h5", 1)
    windows = real_windows(steps.spec, 30)
    expected = steps.finish(windows, keras_version.model.predict(steps.prepare(windows), verbose=0))

    async def scenario() -> tuple[list[np.ndarray], int]:
        process = InferenceProcess(model_store.root)
        await process.start()
        try:
            model = RemoteModel(steps, process, await process.load("tiny-h5", 1, max_batch_size=8))
            batcher = MicroBatcher(
                predict_later=model.predict_scaled,
                max_batch_size=8,
                max_wait_us=2000,
                prepare=model.prepare,
                finish=model.finish,
            )
            results = await asyncio.gather(*(batcher.submit(one[None]) for one in windows))
            await batcher.close()
        finally:
            await process.stop()
        return results, batcher.batches_run

    results, batches = run(scenario())
    np.testing.assert_allclose(np.concatenate(results), expected, rtol=1e-4, atol=1e-4)
    assert batches < len(windows)


def test_a_broken_version_is_refused_with_its_reason(model_store: ModelStore, tmp_path: Path) -> None:
    shutil.copytree(model_store.root / "tiny", tmp_path / "tiny")
    (tmp_path / "tiny" / "1" / "model.keras").write_bytes(b"not a keras file")

    async def scenario() -> tuple[str, np.ndarray]:
        process = InferenceProcess(tmp_path)
        await process.start()
        try:
            with pytest.raises(BrokenVersionError) as refused:
                await process.load("tiny", 1, max_batch_size=4)
            # The worker survives a broken version and serves the next one.
            handle = await process.load("tiny", 2, max_batch_size=4)
            steps = steps_for(ModelStore(tmp_path), "tiny", 2)
            outputs = await process.predict(handle, steps.prepare(real_windows(steps.spec, 2)))
        finally:
            await process.stop()
        return str(refused.value), outputs

    reason, outputs = run(scenario())
    assert reason.startswith("tiny v1: ")
    assert outputs.shape == (2, 1)


def test_a_killed_worker_fails_waiting_calls_then_comes_back_with_the_same_handles(model_store: ModelStore) -> None:
    steps = steps_for(model_store, "tiny")
    scaled = steps.prepare(real_windows(steps.spec, 3))

    async def scenario() -> tuple[np.ndarray, list[BaseException | np.ndarray], np.ndarray, int, int, int]:
        process = InferenceProcess(model_store.root, restart_delay_seconds=0.1)
        await process.start()
        try:
            handle = await process.load("tiny", 1, max_batch_size=4)
            before = await process.predict(handle, scaled)
            first_pid = process.pid
            assert first_pid is not None
            # Calls in flight when the worker dies get 503, not a hang.
            waiting = [process.predict(handle, scaled) for _ in range(20)]
            os.kill(first_pid, signal.SIGKILL)
            outcomes = await asyncio.gather(*waiting, return_exceptions=True)
            await until(lambda: process.restarts == 1 and handle in process._ready)
            after = await process.predict(handle, scaled)
            second_pid = process.pid
            assert second_pid is not None
        finally:
            await process.stop()
        return before, outcomes, after, first_pid, second_pid, process.restarts

    before, outcomes, after, first_pid, second_pid, restarts = run(scenario())
    failed = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    assert failed, "the kill landed after every call had been answered"
    assert all(isinstance(error, InferenceUnavailableError) and error.status_code == 503 for error in failed)
    assert all("restarting" in str(error) for error in failed)
    np.testing.assert_allclose(after, before, rtol=1e-6)
    assert second_pid != first_pid and restarts == 1


def test_a_dropped_handle_is_refused_and_a_stopped_process_takes_no_calls(model_store: ModelStore) -> None:
    steps = steps_for(model_store, "tiny")
    scaled = steps.prepare(real_windows(steps.spec, 1))

    async def scenario() -> None:
        process = InferenceProcess(model_store.root)
        await process.start()
        kept = await process.load("tiny", 1, max_batch_size=4)
        dropped = await process.load("tiny", 1, max_batch_size=4)
        assert kept != dropped
        await process.drop(dropped)
        with pytest.raises(InferenceUnavailableError):
            process.predict(dropped, scaled)
        # Dropping one load of a version leaves the other one serving.
        assert (await process.predict(kept, scaled)).shape == (1, 1)
        await process.stop()
        with pytest.raises(InferenceUnavailableError):
            process.predict(kept, scaled)

    run(scenario())
