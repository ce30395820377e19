"""Real (tiny) training runs: builders, save → load, forecasts in price units, no clipping."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.helpers import TINY_ROWS, krx_clean, tiny_config, walk_clean
from training import evaluation, features
from training.artifact import load_version
from training.baselines import drift_forecast, mean_log_return
from training.calendars import calendar_of, sessions_after, sessions_between
from training.config import ARCHITECTURES
from training.data import CleanResult
from training.errors import ConfigError, DataError
from training.files import now_iso
from training.fitting import (
    TrainingRun,
    TrainOutcome,
    build_metadata,
    evaluate_fitted,
    fit_network,
    predict_prices,
    prepare,
    train_version,
)
from training.models import build_model
from training.spec import OUTLIER_COLUMN
from training.store import MODEL_FILE, ModelStore

pytestmark = pytest.mark.tf

PRICE_COLUMNS = [0, 1, 2, 3]  # open, high, low, close in the default feature order


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_builders_give_the_window_to_horizon_shape(architecture: str) -> None:
    model = build_model(architecture, window=10, feature_count=5, horizon=3, units=4, layer_count=2, dropout=0.1)
    assert tuple(model.input_shape) == (None, 10, 5)
    assert tuple(model.output_shape) == (None, 3)
    recurrent = [layer for layer in model.layers if layer.name.startswith(architecture)]
    assert len(recurrent) == 2


def test_builders_are_reproducible_with_a_seed() -> None:
    first = build_model("gru", window=10, feature_count=5, units=4, seed=3)
    second = build_model("gru", window=10, feature_count=5, units=4, seed=3)
    other = build_model("gru", window=10, feature_count=5, units=4, seed=4)
    for left, right in zip(first.get_weights(), second.get_weights(), strict=True):
        np.testing.assert_array_equal(left, right)
    assert any(not np.array_equal(a, b) for a, b in zip(first.get_weights(), other.get_weights(), strict=True))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"architecture": "transformer"}, "architecture must be one of"),
        ({"units": 0}, "units and layers must be at least 1"),
        ({"dropout": 1.0}, "dropout must be in"),
        ({"learning_rate": 0.0}, "learning_rate must be positive"),
    ],
)
def test_builders_refuse_bad_settings(arguments: dict, message: str) -> None:
    values = {"architecture": "lstm", "window": 10, "feature_count": 5, **arguments}
    with pytest.raises(ConfigError, match=message):
        build_model(**values)


def test_save_then_load_gives_identical_predictions(small_clean: CleanResult, tmp_path: Path) -> None:
    config = tiny_config(architecture="simple_rnn", epochs=1)
    prepared = prepare(small_clean.frame, config.window_spec(), config.validation_fraction, config.test_fraction)
    model, epochs_run, _ = fit_network(config, prepared)
    metrics, intervals = evaluate_fitted(model, prepared, config.interval_levels)
    source = {"name": "slice", "path": "slice", "sha256": "0" * 64}
    metadata = build_metadata(config, prepared, small_clean, source, metrics, intervals, 1.0, epochs_run)
    metadata["created_at"] = now_iso()
    store = ModelStore(tmp_path)
    version = store.save_version("roundtrip", lambda folder: model.save(folder / MODEL_FILE), metadata)

    loaded = load_version(store, "roundtrip", version)
    test_inputs = prepared.parts["test"][0]
    expected = predict_prices(model, test_inputs, prepared.spec, prepared.scaler)
    np.testing.assert_array_equal(loaded.predict_prices(test_inputs), expected)
    np.testing.assert_array_equal(loaded.scaler.feature_center, prepared.scaler.feature_center)
    assert loaded.spec == prepared.spec


def test_trained_version_holds_model_scaler_and_provenance(trained_store: tuple[ModelStore, TrainOutcome]) -> None:
    store, outcome = trained_store
    folder = store.version_dir("tiny", outcome.version)
    assert outcome.version == 1
    assert (folder / MODEL_FILE).is_file()
    metadata = outcome.metadata
    assert metadata["features"] == ["open", "high", "low", "close", "volume"]
    assert (metadata["label"], metadata["window"], metadata["horizon"]) == ("close", 10, 1)
    assert metadata["transform"] == "relative" and metadata["scaler"]["kind"] == "standard"
    assert len(metadata["scaler"]["feature_center"]) == 5 and len(metadata["scaler"]["target_scale"]) == 1
    assert metadata["data"]["rows"] == TINY_ROWS and metadata["data"]["end"] == "2017-11-10"
    assert metadata["split"]["train"]["end"] < metadata["split"]["validation"]["start"]
    assert metadata["split"]["calibration"]["end"] < metadata["split"]["test"]["start"]
    assert set(metadata["metrics"]) == {"model", "naive", "drift"}
    assert metadata["metrics"]["naive"]["mae_ratio_to_naive"] == pytest.approx(1.0)
    assert metadata["metrics"]["model"]["mase"] > 0  # Hyndman-Koehler: scaled by the training part
    # The served network is refitted on every row; the figures stay the evaluated run's.
    assert metadata["trained_through"] == metadata["data"]["end"] == "2017-11-10"
    assert metadata["refit"]["evaluated_trained_through"] == metadata["split"]["train"]["end"]
    assert metadata["scaler"] != metadata["refit"]["evaluated_scaler"]
    assert metadata["calendar"] == "XNYS"
    # Early stopping and calibration on disjoint blocks, horizon - 1 (0) rows apart.
    assert metadata["split"]["validation"]["end"] < metadata["split"]["calibration"]["start"]
    assert metadata["intervals"]["refused"] == {}
    assert 1 <= metadata["epochs_run"] <= 2
    assert metadata["libraries"]["keras"].startswith("3.")


def test_saved_model_forecasts_finite_prices_near_the_last_close(
    trained_store: tuple[ModelStore, TrainOutcome], small_clean: CleanResult
) -> None:
    store, outcome = trained_store
    loaded = load_version(store, "tiny", outcome.version)
    values = small_clean.frame[list(loaded.spec.features)].to_numpy(dtype=np.float64)
    last_window = values[None, -loaded.spec.window :]
    forecast = loaded.predict_prices(last_window)
    last_close = small_clean.frame["close"].iloc[-1]
    assert forecast.shape == (1, 1)
    assert np.isfinite(forecast).all()
    assert 0.9 * last_close < forecast[0, 0] < 1.1 * last_close


def test_forecasts_follow_prices_far_above_the_training_range(
    trained_store: tuple[ModelStore, TrainOutcome], small_clean: CleanResult
) -> None:
    store, outcome = trained_store
    loaded = load_version(store, "tiny", outcome.version)
    prepared = prepare(small_clean.frame, loaded.spec, 0.15, 0.15)
    test_inputs = prepared.parts["test"][0]
    # The stock triples: every price in the test windows is three times higher.
    tripled = test_inputs.copy()
    tripled[:, :, PRICE_COLUMNS] *= 3
    forecast = loaded.predict_prices(tripled)[:, 0]
    last_close = features.reference_values(tripled, loaded.spec)
    training_max = small_clean.frame["close"].iloc[: prepared.bounds.train_end].max()
    assert np.all(np.isfinite(forecast))
    assert np.all((forecast > 0.9 * last_close) & (forecast < 1.1 * last_close))
    # Not clipped at anything seen in training.
    assert forecast.min() > 1.5 * training_max
    np.testing.assert_allclose(forecast, loaded.predict_prices(test_inputs)[:, 0] * 3, rtol=1e-4)


def test_a_krx_export_with_zero_volume_holiday_rows_trains_on_xkrx_sessions(tmp_path: Path) -> None:
    clean = krx_clean(halts=(300, 301))
    run = TrainingRun("samsung", clean, {"name": "005930.csv", "sha256": "k"}, tiny_config(horizon=3, calendar="XKRX"))
    metadata = train_version(run, ModelStore(tmp_path)).metadata

    fit = metadata["data"]["calendar_fit"]
    holidays = fit["non_sessions"]["dates"]
    assert {"2022-01-31", "2022-02-01", "2022-02-02", "2022-06-01"} <= set(holidays)
    assert metadata["data"]["rows"] == len(clean.frame) - len(holidays)
    assert metadata["data"]["rows_dropped"]["non_sessions"] == len(holidays)
    # Every step the network learnt is one XKRX session: the rows are the calendar's sessions, none skipped.
    first, last = dt.date.fromisoformat(metadata["data"]["start"]), dt.date.fromisoformat(metadata["data"]["end"])
    assert metadata["data"]["rows"] == len(sessions_between(first - dt.timedelta(days=1), last, "XKRX"))
    # Its forecast dates skip Chuseok 2023 (28, 29 September, 2 and 3 October), as its steps do.
    assert last == dt.date(2023, 9, 27)
    assert sessions_after(last, 3, calendar_of(metadata)) == [
        dt.date(2023, 10, 4),
        dt.date(2023, 10, 5),
        dt.date(2023, 10, 6),
    ]
    # The halts stay as steps; their zero volume does not spike the volume feature's scale.
    assert fit["zero_volume_sessions"]["dates"] == ["2022-06-20", "2022-06-21"]
    assert metadata["scaler"]["feature_scale"][4] < 0.5


def test_a_24_7_series_is_refused_on_the_default_calendar_and_dated_saturday_on_24_7(tmp_path: Path) -> None:
    clean = walk_clean(list(pd.date_range(end="2024-11-29", periods=400)))
    store = ModelStore(tmp_path)
    source = {"name": "btc.csv", "sha256": "b"}
    with pytest.raises(DataError, match=r"^the data trades on weekends \(2023-10-28, 2023-10-29, .* and \d+ more\), "):
        train_version(TrainingRun("btc", clean, source, tiny_config()), store)
    assert store.model_names() == []

    metadata = train_version(TrainingRun("btc", clean, source, tiny_config(horizon=2, calendar="24/7")), store).metadata
    assert metadata["calendar"] == "24/7" and metadata["data"]["rows"] == 400
    assert sessions_after(dt.date(2024, 11, 29), 2, calendar_of(metadata)) == [
        dt.date(2024, 11, 30),
        dt.date(2024, 12, 1),
    ]


def test_the_test_splits_histories_come_from_the_rows_not_from_the_windows_left(small_clean: CleanResult) -> None:
    frame = small_clean.frame.copy()
    # A spike in the training part, masking on: its windows leave training, its rows stay history.
    frame.loc[120, "close"] *= 3
    frame[OUTLIER_COLUMN] = False
    config = tiny_config(architecture="simple_rnn")
    prepared = prepare(frame, config.window_spec(), config.validation_fraction, config.test_fraction)
    unmasked = prepare(
        frame.drop(columns=OUTLIER_COLUMN), prepared.spec, config.validation_fraction, config.test_fraction
    )
    assert len(prepared.parts["train"][0]) < len(unmasked.parts["train"][0])
    model, _, _ = fit_network(config, prepared)
    metrics, _ = evaluate_fitted(model, prepared, config.interval_levels)

    close = frame["close"].to_numpy(dtype=np.float64)
    test_inputs, test_futures = prepared.parts["test"]
    before_test = close[: prepared.bounds.validation_end]
    drift = drift_forecast(test_inputs[:, -1, 3], 1, mean_log_return(before_test))
    assert metrics["drift"]["mae"] == pytest.approx(float(np.mean(np.abs(drift - test_futures))))
    training_rows = close[: prepared.bounds.train_end]
    assert metrics["naive"]["mase"] == pytest.approx(metrics["naive"]["mae"] / evaluation.naive_scale(training_rows))
    assert metrics["model"]["mase_log"] > 0
