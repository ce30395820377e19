"""The challenger's network runs in a spawned child process: the same forecasts and bands the server would give."""

from __future__ import annotations

import numpy as np
import pytest

from app.inference.steps import ForecastSteps
from app.shadow import child_forecaster
from tests.helpers import real_windows
from training.artifact import load_version
from training.models import predict_outputs
from training.store import ModelStore

pytestmark = pytest.mark.tf


def test_the_child_forecasts_as_the_version_does_in_process(model_store: ModelStore) -> None:
    loaded = load_version(model_store, "tiny", 1)
    windows = real_windows(loaded.spec, 3)
    steps = ForecastSteps(loaded.metadata, loaded.spec, loaded.scaler)
    expected = steps.finish(windows, predict_outputs(loaded.model, steps.prepare(windows)))

    outputs = child_forecaster(model_store.root, "tiny", 1)(windows)

    assert outputs.shape == (3, 1 + 2 * len(steps.interval_levels), loaded.spec.horizon)
    np.testing.assert_allclose(outputs, expected, rtol=1e-5)
