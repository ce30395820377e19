"""The inference process: real spawned worker, real Keras models, real kill -9.

Outputs through the process must equal the Keras model's own; a broken
version is refused with its reason; a killed worker fails the calls waiting
on it with 503, comes back by itself and serves the same handles again.
XLA is off but where a test stops a compiling worker (the engine's tests
cover XLA itself).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest

from app.inference.client import InferenceProcess, InferenceTimeouts, InferenceUnavailableError, RemoteModel
from app.inference.serve_loop import INFERENCE_PROCESS_NAME
from app.inference.steps import ForecastSteps
from app.serving.batching import MicroBatcher
from tests.helpers import WINDOW_ROWS, local_client, make_settings, real_windows, run
from training.artifact import load_preprocessing, load_version
from training.errors import BrokenVersionError
from training.store import ModelStore

pytestmark = pytest.mark.tf


def steps_for(store: ModelStore, name: str, version: int = 1) -> ForecastSteps:
    return ForecastSteps(*load_preprocessing(store, name, version))


async def until(condition: object, seconds: float = 120.0) -> None:
    """Poll `condition()` until true; fail after `seconds`."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def test_outputs_equal_the_keras_model_s_own(model_store: ModelStore) -> None:
    # Horizons 1 and 5, both versions served by one process.
    cases = {}
    for name in ("tiny", "tiny-h5"):
        keras_version = load_version(model_store, name, 1)
        steps = steps_for(model_store, name)
        windows = real_windows(steps.spec, 12)
        # The worker runs the whole path: scaling in, the network, prices and bounds out.
        cases[name] = (windows, steps.finish(windows, keras_version.model.predict(steps.prepare(windows), verbose=0)))

    async def scenario() -> tuple[dict[str, tuple[np.ndarray, list[np.ndarray]]], str, int | None]:
        process = InferenceProcess(model_store.root, xla=False)
        await process.start()
        try:
            answers = {}
            for name, (windows, _) in cases.items():
                handle = await process.load(name, 1, max_batch_size=8)
                whole = await process.predict(handle, windows)  # 12 rows: two chunks of 8 and 4
                answers[name] = (whole, [await process.predict(handle, one[None]) for one in windows])
            pid = process.pid
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        finally:
            await process.stop()
        return answers, comm, pid

    answers, comm, pid = run(scenario())
    for name, (whole, singles) in answers.items():
        expected = cases[name][1]
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
        process = InferenceProcess(model_store.root, xla=False)
        await process.start()
        try:
            handle = await process.load("tiny-h5", 1, max_batch_size=8)
            model = RemoteModel(steps.metadata, steps.spec, steps.scaler, process, handle)
            batcher = MicroBatcher(predict_later=model.forecast_later, max_batch_size=8, max_wait_us=2000)
            results = await asyncio.gather(*(batcher.submit(one[None]) for one in windows))
            await batcher.close()
        finally:
            await process.stop()
        return results, batcher.batches_run

    results, batches = run(scenario())
    np.testing.assert_allclose(np.concatenate(results), expected, rtol=1e-4, atol=1e-4)
    assert batches < len(windows)


def test_a_worker_stopped_while_it_compiles_exits_cleanly(model_store: ModelStore) -> None:
    """Stopping the service while XLA compiles a version must not abort or crash the worker."""

    async def stop_after(delay: float) -> tuple[bool, str | None]:
        process = InferenceProcess(model_store.root, xla=True, engine="tensorflow")
        await process.start()
        try:
            handle = await process.load("tiny", 1, max_batch_size=64)
            await asyncio.sleep(delay)
            compiling = not process.jit_compiled(handle)
        finally:
            await process.stop()
        return compiling, process.status()["last_exit"]

    # The crash came at some moments of a compilation and not others: stop at several.
    outcomes = [run(stop_after(delay)) for delay in (0.0, 0.1, 0.3, 0.6, 1.0, 1.5)]
    assert [exit for _, exit in outcomes] == ["exit code 0"] * len(outcomes)
    # At least one stop must have come while the compiler was running.
    assert any(compiling for compiling, _ in outcomes)


def test_a_broken_version_is_refused_with_its_reason(model_store: ModelStore, tmp_path: Path) -> None:
    shutil.copytree(model_store.root / "tiny", tmp_path / "tiny")
    (tmp_path / "tiny" / "1" / "model.keras").write_bytes(b"not a keras file")
    steps = steps_for(ModelStore(tmp_path), "tiny", 2)

    async def scenario() -> tuple[str, np.ndarray]:
        process = InferenceProcess(tmp_path, xla=False)
        await process.start()
        try:
            with pytest.raises(BrokenVersionError) as refused:
                await process.load("tiny", 1, max_batch_size=4)
            # The worker survives a broken version and serves the next one.
            handle = await process.load("tiny", 2, max_batch_size=4)
            outputs = await process.predict(handle, real_windows(steps.spec, 2))
        finally:
            await process.stop()
        return str(refused.value), outputs

    reason, outputs = run(scenario())
    assert reason.startswith("tiny v1: ")
    assert outputs.shape == (2, 1 + 2 * len(steps.interval_levels), steps.horizon)


def test_a_killed_worker_fails_waiting_calls_then_comes_back_with_the_same_handles(model_store: ModelStore) -> None:
    steps = steps_for(model_store, "tiny")
    windows = real_windows(steps.spec, 3)

    async def scenario() -> tuple[np.ndarray, list[BaseException | np.ndarray], np.ndarray, int, int, int]:
        process = InferenceProcess(model_store.root, xla=False, timeouts=InferenceTimeouts(restart_delay_seconds=0.1))
        await process.start()
        try:
            handle = await process.load("tiny", 1, max_batch_size=4)
            before = await process.predict(handle, windows)
            first_pid = process.pid
            assert first_pid is not None
            # Calls in flight when the worker dies get 503, not a hang.
            waiting = [process.predict(handle, windows) for _ in range(20)]
            os.kill(first_pid, signal.SIGKILL)
            outcomes = await asyncio.gather(*waiting, return_exceptions=True)
            await until(lambda: process.restarts == 1 and handle in process._ready)
            after = await process.predict(handle, windows)
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
    windows = real_windows(steps.spec, 1)

    async def scenario() -> None:
        process = InferenceProcess(model_store.root, xla=False)
        await process.start()
        kept = await process.load("tiny", 1, max_batch_size=4)
        dropped = await process.load("tiny", 1, max_batch_size=4)
        assert kept != dropped
        await process.drop(dropped)
        with pytest.raises(InferenceUnavailableError):
            process.predict(dropped, windows)
        # Dropping one load of a version leaves the other one serving.
        assert len(await process.predict(kept, windows)) == 1
        await process.stop()
        with pytest.raises(InferenceUnavailableError):
            process.predict(kept, windows)

    run(scenario())


def test_the_service_survives_a_killed_inference_process(model_store: ModelStore, tmp_path: Path) -> None:
    import time

    from app.main import create_app

    body = {"model": "tiny", "window": WINDOW_ROWS}
    with local_client(create_app(make_settings(model_store.root, tmp_path / "var"))) as client:
        before = client.post("/predict", json=body)
        assert before.status_code == 200, before.text
        first_pid = client.get("/ready").json()["inference_process"]["pid"]
        os.kill(first_pid, signal.SIGKILL)
        statuses, details = [], []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            answer = client.post("/predict", json=body)
            statuses.append(answer.status_code)
            if answer.status_code != 200:
                details.append(answer.json()["detail"])
            ready = client.get("/ready")
            if answer.status_code == 200 and ready.status_code == 200:
                break
            if ready.status_code == 503:
                assert "inference process" in ready.json()["detail"] or "not loaded" in ready.json()["detail"]
            time.sleep(0.05)
        after = answer.json()
        inference = ready.json()["inference_process"]
    assert set(statuses) <= {200, 503}, statuses
    assert all("inference process" in detail or "retry" in detail for detail in details), details
    assert statuses[-1] == 200 and after["forecast"] == before.json()["forecast"]
    assert inference["restarts"] == 1 and inference["pid"] != first_pid
    assert inference["last_exit"] == "exit code -9"


def test_a_worker_that_stops_answering_is_killed_and_replaced(model_store: ModelStore) -> None:
    steps = steps_for(model_store, "tiny")
    windows = real_windows(steps.spec, 2)

    async def scenario() -> tuple[BaseException | None, np.ndarray, dict[str, object], int]:
        process = InferenceProcess(
            model_store.root, xla=False, timeouts=InferenceTimeouts(call_seconds=1.0, restart_delay_seconds=0.1)
        )
        await process.start()
        try:
            handle = await process.load("tiny", 1, max_batch_size=4)
            frozen = process.pid
            assert frozen is not None
            os.kill(frozen, signal.SIGSTOP)  # alive, but never answers
            error: BaseException | None = None
            try:
                await process.predict(handle, windows)
            except InferenceUnavailableError as caught:
                error = caught
            await until(lambda: process.serving(handle))
            outputs = await process.predict(handle, windows)
            status = process.status()
        finally:
            await process.stop()
        return error, outputs, status, frozen

    error, outputs, status, frozen = run(scenario())
    assert error is not None and "unanswered past its deadline" in str(error)
    assert outputs.shape == (2, 1 + 2 * len(steps.interval_levels), steps.horizon)
    assert status["restarts"] == 1 and status["pid"] != frozen
    assert not Path(f"/proc/{frozen}").exists() or Path(f"/proc/{frozen}/stat").read_text().split()[2] == "Z"


def test_a_worker_that_cannot_be_started_is_tried_again(
    model_store: ModelStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario() -> tuple[int, int]:
        process = InferenceProcess(model_store.root, xla=False, timeouts=InferenceTimeouts(restart_delay_seconds=0.05))
        await process.start()
        try:
            handle = await process.load("tiny", 1, max_batch_size=4)
            spawn = process._spawn
            refused: list[str] = []

            async def spawn_once_refused() -> None:
                if not refused:
                    refused.append("EAGAIN")
                    raise OSError("Resource temporarily unavailable")  # what fork says with no processes left
                await spawn()

            monkeypatch.setattr(process, "_spawn", spawn_once_refused)
            pid = process.pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            await until(lambda: not process.serving(handle))  # the death has been noticed
            await until(lambda: process.serving(handle))
        finally:
            await process.stop()
        return len(refused), process.restarts

    assert run(scenario()) == (1, 1)
