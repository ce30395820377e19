"""A fake inference backend for HTTP-layer tests: the real numpy steps around a numpy "network", no TensorFlow.

`FakeInference` stands in for `app.inference.client.InferenceProcess` where
the network is not the point (auth, limits, OpenAPI, protocol framing,
validation), as MLServer's `SumModel` and KServe's `Dummy*Model` do. It
loads a version's real preprocessing from the store and runs the real
`ForecastSteps` (scaling, prices, conformal bounds), so answers keep their
real shape and units; only the network is a fixed linear map, in-process.
Tests that need the real numbers use the real inference process.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import numpy as np

from app.core.config import Settings
from app.core.process import describe_error
from app.inference.client import InferenceFailedError, InferenceUnavailableError

# The one import of the numpy steps (they move to app/inference/steps.py in issue 22).
from app.inference.steps import ForecastSteps
from training.artifact import load_preprocessing
from training.errors import BrokenVersionError
from training.store import ModelStore


class LinearNetwork:
    """A fixed linear map from the scaled window (n, window, features) to scaled outputs (n, horizon)."""

    def __init__(self, window: int, feature_count: int, horizon: int) -> None:
        # Small weights: scaled outputs stay near zero, so prices stay near the last close.
        weights = np.random.default_rng(0).normal(scale=0.01, size=(window * feature_count, horizon))
        self.weights = weights.astype(np.float32)

    def __call__(self, scaled: np.ndarray) -> np.ndarray:
        """Outputs for scaled float32 inputs."""
        return np.asarray(scaled, dtype=np.float32).reshape(len(scaled), -1) @ self.weights


class FakeVersion(ForecastSteps):
    """A loaded version in the fake backend: the real steps around `LinearNetwork`."""

    def __init__(self, metadata: dict[str, Any], spec: Any, scaler: Any) -> None:
        super().__init__(metadata, spec, scaler)
        self.network = LinearNetwork(spec.window, len(spec.features), spec.horizon)

    def forecast(self, windows: np.ndarray) -> np.ndarray:
        """Forecasts and bounds (`ForecastSteps.finish`), as the real inference process answers them."""
        return self.finish(windows, self.network(self.prepare(windows)))


class FakeInference:
    """In-process stand-in for `InferenceProcess`: the same methods the registry and the routes call."""

    def __init__(self, models_dir: Path, **_: Any) -> None:
        self.store = ModelStore(models_dir)
        self.versions: dict[int, FakeVersion] = {}
        self._handles = 0
        self._running = False
        self.restarts = 0
        self.last_exit: str | None = None
        # Loads asked for, by (name, version): what tests count instead of the registry's own counter.
        self.loads: list[tuple[str, int]] = []

    @classmethod
    def for_settings(cls, settings: Settings) -> FakeInference:
        """The fake for an app's settings (what `create_app(inference=...)` calls)."""
        return cls(settings.models_dir)

    async def start(self) -> None:
        """Nothing to spawn."""
        self._running = True

    async def stop(self) -> None:
        """Forget every loaded version."""
        self._running = False
        self.versions.clear()
        self.last_exit = "exit code 0"

    @property
    def pid(self) -> int | None:
        """This process's id while "running" (there is no other process)."""
        return os.getpid() if self._running else None

    def status(self) -> dict[str, Any]:
        """The shape /ready reports."""
        return {"pid": self.pid, "restarts": self.restarts, "last_exit": self.last_exit}

    def serving(self, handle: int) -> bool:
        """True while the handle is loaded."""
        return self._running and handle in self.versions

    async def answering(self, timeout: float) -> bool:
        """Always answers while running."""
        return self._running

    async def load(self, name: str, version: int, max_batch_size: int) -> int:
        """Load a version's real preprocessing, check its files and warm it up; BrokenVersionError as the real one."""
        self.loads.append((name, version))
        metadata, spec, scaler = await asyncio.to_thread(load_preprocessing, self.store, name, version)
        # The real load's file check (missing or tampered network file), without reading the network.
        await asyncio.to_thread(self.store.verified_model_path, name, version, metadata)
        loaded = FakeVersion(metadata, spec, scaler)
        warm = loaded.forecast(np.ones((1, spec.window, len(spec.features))))
        if not np.all(np.isfinite(warm)):
            raise BrokenVersionError(f"{name} v{version}: warm-up forecast is not finite")
        self._handles += 1
        self.versions[self._handles] = loaded
        return self._handles

    def predict(self, handle: int, windows: np.ndarray) -> asyncio.Future[np.ndarray]:
        """Forecasts and bounds for raw windows, as an already settled future."""
        if not self.serving(handle):
            raise InferenceUnavailableError("this model version is being reloaded by the inference process; retry")
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        try:
            future.set_result(self.versions[handle].forecast(windows))
        except Exception as error:
            future.set_exception(InferenceFailedError(f"inference failed: {describe_error(error)}"))
        return future

    async def drop(self, handle: int) -> None:
        """Unload a version."""
        self.versions.pop(handle, None)

    def jit_compiled(self, handle: int) -> bool:
        """The fake has no compiled graph."""
        return False

    def engine(self, handle: int) -> str | None:
        """The fake's network is numpy, as ONNX Runtime's would be to the API process: "onnx" while loaded."""
        return "onnx" if handle in self.versions else None


def fake_app_on(settings: Settings) -> Any:
    """The real app (`create_app`) on `settings`, its inference backend `FakeInference`."""
    from app.main import create_app

    return create_app(settings, inference=FakeInference.for_settings)


def fake_app(models_dir: Path, data_dir: Path, **overrides: Any) -> Any:
    """`fake_app_on` the tests' settings (`make_settings`)."""
    from tests.helpers import make_settings

    return fake_app_on(make_settings(models_dir, data_dir, **overrides))
