"""The compiled predictor answers exactly what the Keras model itself answers, in price units."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from app.inference.engine import CompiledModel, bucket_sizes
from tests.helpers import real_windows
from training import conformal, features
from training.artifact import LoadedVersion, load_version
from training.store import ModelStore

pytestmark = pytest.mark.tf

# float32 network outputs, exponentiated into prices of about 40 to 90 USD.
RELATIVE_TOLERANCE = 1e-5
# Small enough that padding, exact buckets and chunking are all exercised.
MAX_BATCH_SIZE = 16


def keras_prices(loaded: LoadedVersion, windows: np.ndarray) -> np.ndarray:
    """The reference: the Keras model called eagerly on the same preprocessing."""
    scaled = features.scale_inputs(windows, loaded.spec, loaded.scaler)
    outputs = loaded.model(scaled, training=False).numpy()
    return features.outputs_to_prices(windows, outputs, loaded.spec, loaded.scaler)


def forecast_prices(model: CompiledModel, windows: np.ndarray) -> np.ndarray:
    """The forecasts (n, horizon) of what the inference process answers, without their bounds."""
    return model.forecast(windows)[:, 0]


@pytest.fixture(scope="module", params=["tiny", "tiny-h5"])
def loaded(request: pytest.FixtureRequest, model_store: ModelStore) -> LoadedVersion:
    """A horizon-1 and a horizon-3 version, loaded from the store."""
    return load_version(model_store, request.param, 1)


@pytest.fixture(scope="module")
def compiled(loaded: LoadedVersion) -> CompiledModel:
    """The same version, once it serves the XLA-compiled graph."""
    model = CompiledModel(loaded, max_batch_size=MAX_BATCH_SIZE)
    assert model.wait_for_compilation(timeout=300)
    assert model.jit_compiled
    return model


@pytest.mark.parametrize("count", [1, 5, MAX_BATCH_SIZE, 37])
def test_batch_matches_keras_model(compiled: CompiledModel, loaded: LoadedVersion, count: int) -> None:
    windows = real_windows(loaded.spec, count)
    predicted = forecast_prices(compiled, windows)
    assert predicted.shape == (count, loaded.spec.horizon)
    np.testing.assert_allclose(predicted, keras_prices(loaded, windows), rtol=RELATIVE_TOLERANCE)


def test_forecast_stacks_prices_then_lower_then_upper_bounds(compiled: CompiledModel, loaded: LoadedVersion) -> None:
    windows = real_windows(loaded.spec, 7)
    output = compiled.forecast(windows)
    levels = compiled.interval_levels
    assert levels == ("80", "90", "95")
    assert output.shape == (7, 1 + 2 * len(levels), loaded.spec.horizon)
    prices = output[:, 0]
    np.testing.assert_allclose(prices, keras_prices(loaded, windows), rtol=RELATIVE_TOLERANCE)
    bounds = conformal.bounds_for(windows, prices, loaded.metadata["intervals"], loaded.spec)
    for index, level in enumerate(levels):
        np.testing.assert_array_equal(output[:, 1 + index], bounds[level][0])
        np.testing.assert_array_equal(output[:, 1 + len(levels) + index], bounds[level][1])
    assert np.all(output[:, 1] < output[:, 0]) and np.all(output[:, 0] < output[:, 1 + len(levels)])


def test_batch_matches_keras_predict(compiled: CompiledModel, loaded: LoadedVersion) -> None:
    windows = real_windows(loaded.spec, 20)
    scaled = features.scale_inputs(windows, loaded.spec, loaded.scaler)
    outputs = loaded.model.predict(scaled, verbose=0)
    expected = features.outputs_to_prices(windows, outputs, loaded.spec, loaded.scaler)
    np.testing.assert_allclose(forecast_prices(compiled, windows), expected, rtol=RELATIVE_TOLERANCE)


def test_single_predictions_equal_batched_ones(compiled: CompiledModel, loaded: LoadedVersion) -> None:
    windows = real_windows(loaded.spec, 9)
    batched = forecast_prices(compiled, windows)
    singles = np.concatenate([forecast_prices(compiled, window[None]) for window in windows])
    np.testing.assert_allclose(singles, batched, rtol=RELATIVE_TOLERANCE)


def test_plain_graph_matches_keras_model(loaded: LoadedVersion) -> None:
    plain = CompiledModel(loaded, max_batch_size=4, jit_compile=False)
    windows = real_windows(loaded.spec, 7)
    assert plain.wait_for_compilation()
    assert not plain.jit_compiled
    np.testing.assert_allclose(forecast_prices(plain, windows), keras_prices(loaded, windows), rtol=RELATIVE_TOLERANCE)


def test_compiling_in_the_foreground_serves_xla_at_once(loaded: LoadedVersion) -> None:
    model = CompiledModel(loaded, max_batch_size=4, compile_in_background=False)
    windows = real_windows(loaded.spec, 6)
    assert model.jit_compiled
    assert model.compile_seconds is not None
    np.testing.assert_allclose(forecast_prices(model, windows), keras_prices(loaded, windows), rtol=RELATIVE_TOLERANCE)


def test_answers_while_xla_compiles_in_the_background(loaded: LoadedVersion) -> None:
    model = CompiledModel(loaded, max_batch_size=4)
    windows = real_windows(loaded.spec, 6)
    # Whichever graph answers (plain now, XLA later), the forecasts are the same.
    before = forecast_prices(model, windows)
    assert model.wait_for_compilation(timeout=300)
    after = forecast_prices(model, windows)
    np.testing.assert_allclose(before, keras_prices(loaded, windows), rtol=RELATIVE_TOLERANCE)
    np.testing.assert_allclose(after, before, rtol=RELATIVE_TOLERANCE)


def test_concurrent_threads_get_their_own_forecasts(compiled: CompiledModel, loaded: LoadedVersion) -> None:
    windows = real_windows(loaded.spec, 24)
    expected = keras_prices(loaded, windows)
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda index: forecast_prices(compiled, windows[index : index + 1]), range(24)))
    np.testing.assert_allclose(np.concatenate(results), expected, rtol=RELATIVE_TOLERANCE)


def test_empty_batch_gives_empty_forecasts(compiled: CompiledModel, loaded: LoadedVersion) -> None:
    empty = np.empty((0, loaded.spec.window, len(loaded.spec.features)))
    assert forecast_prices(compiled, empty).shape == (0, loaded.spec.horizon)


def test_wrong_window_shape_is_refused(compiled: CompiledModel, loaded: LoadedVersion) -> None:
    short = real_windows(loaded.spec, 1)[:, 1:, :]
    with pytest.raises(ValueError, match=rf"expected windows of shape \(n, {loaded.spec.window}, 5\)"):
        forecast_prices(compiled, short)


def test_exposes_version_identity(compiled: CompiledModel, loaded: LoadedVersion) -> None:
    assert (compiled.name, compiled.version) == (loaded.name, 1)
    assert compiled.spec == loaded.spec
    assert compiled.scaler is loaded.scaler
    assert compiled.metadata["horizon"] == loaded.spec.horizon
    assert compiled.batch_sizes == (1, 2, 4, 8, 16)


@pytest.mark.parametrize(
    ("max_batch_size", "expected"),
    [(1, (1,)), (16, (1, 2, 4, 8, 16)), (64, (1, 2, 4, 8, 16, 32, 64)), (100, (1, 2, 4, 8, 16, 32, 64, 100))],
)
def test_bucket_sizes_end_at_the_largest_batch(max_batch_size: int, expected: tuple[int, ...]) -> None:
    assert bucket_sizes(max_batch_size) == expected


def test_bucket_sizes_refuse_an_empty_batch() -> None:
    with pytest.raises(ValueError, match="max_batch_size must be at least 1, got 0"):
        bucket_sizes(0)
