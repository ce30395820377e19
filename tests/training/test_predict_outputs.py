"""Training-time prediction: the network called directly, so no tf.function is traced (and none retraced)."""

from __future__ import annotations

import numpy as np
import pytest

from training.models import build_model, predict_outputs

pytestmark = pytest.mark.tf


def test_predicting_arrays_of_several_lengths_traces_no_function() -> None:
    model = build_model("lstm", window=10, feature_count=5, horizon=3, units=4)
    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=(length, 10, 5)) for length in (7, 300, 1)]
    outputs = [predict_outputs(model, array, chunk=128) for array in arrays]
    # model.predict built a tf.function here and traced it once per new shape: the cause of the
    # "triggered tf.function retracing" warnings in every backtest.
    assert model.predict_function is None
    for array, output in zip(arrays, outputs, strict=True):
        assert output.shape == (len(array), 3) and output.dtype == np.float32
        np.testing.assert_allclose(output, model.predict(array, verbose=0), rtol=1e-5, atol=1e-6)
    assert predict_outputs(model, np.empty((0, 10, 5))).shape == (0, 3)
