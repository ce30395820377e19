"""Windows, the scale-free transform, the chronological split, and the no-leakage proof."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training import features
from training.backtest import plan_folds, prepare_fold
from training.data import CleanResult
from training.errors import ConfigError
from training.features import Scaler
from training.fitting import outlier_mask, prepare
from training.spec import WindowSpec

PRICES = ("open", "high", "low", "close")
SPEC = WindowSpec(features=("open", "high", "low", "close", "volume"), label="close", window=10)


def counting_frame(rows: int) -> pd.DataFrame:
    """Prices that equal 100 + the row number, so a value tells which row it came from."""
    count = np.arange(rows, dtype=np.float64)
    return pd.DataFrame(
        {
            "date": pd.bdate_range("2020-01-01", periods=rows),
            **{column: 100 + count for column in PRICES},
            "volume": 1000 + count,
        }
    )


def test_windows_are_float32_batch_time_features(small_clean: CleanResult) -> None:
    prepared = prepare(small_clean.frame, SPEC, 0.15, 0.15)
    inputs, futures = prepared.parts["train"]
    scaled = features.scale_inputs(inputs, SPEC, prepared.scaler)
    targets = features.scale_targets(inputs, futures, SPEC, prepared.scaler)
    train_rows = prepared.bounds.train_end
    assert scaled.dtype == np.float32 and targets.dtype == np.float32
    assert scaled.shape == (train_rows - 10 - 1 + 1, 10, 5)
    assert targets.shape == (train_rows - 10, 1)
    assert np.all(np.isfinite(scaled))


def test_window_futures_are_the_next_label_values() -> None:
    values = counting_frame(30)[list(SPEC.features)].to_numpy()
    spec = WindowSpec(features=SPEC.features, label="close", window=5, horizon=3)
    inputs, futures = features.make_windows(values, spec)
    assert inputs.shape == (30 - 5 - 3 + 1, 5, 5)
    assert futures.shape == (23, 3)
    # Window 0 covers rows 0..4; its futures are the close on rows 5, 6, 7.
    assert inputs[0, :, 3].tolist() == [100, 101, 102, 103, 104]
    assert futures[0].tolist() == [105, 106, 107]
    assert futures[-1].tolist() == [127, 128, 129]


def test_too_short_data_gives_no_windows() -> None:
    inputs, futures = features.make_windows(np.ones((5, 5)), SPEC)
    assert inputs.shape == (0, 10, 5) and futures.shape == (0, 1)


def test_no_window_straddles_a_split_boundary() -> None:
    frame = counting_frame(400)
    prepared = prepare(frame, SPEC, 0.15, 0.15)
    bounds = prepared.bounds
    train_inputs, train_futures = prepared.parts["train"]
    validation_inputs, validation_futures = prepared.parts["validation"]
    test_inputs, _ = prepared.parts["test"]
    # Prices are 100 + row, so these compare row numbers.
    assert train_futures.max() < 100 + bounds.train_end
    assert validation_inputs[:, :, 3].min() >= 100 + bounds.train_end
    assert validation_futures.max() < 100 + bounds.validation_end
    assert test_inputs[:, :, 3].min() >= 100 + bounds.validation_end
    assert len(train_inputs) == bounds.train_end - SPEC.window


def test_changing_data_after_the_split_leaves_the_scaler_unchanged(small_clean: CleanResult) -> None:
    frame = small_clean.frame
    before = prepare(frame, SPEC, 0.15, 0.15)
    train_end = before.bounds.train_end
    changed = frame.copy()
    rng = np.random.default_rng(7)
    later = changed.index[train_end:]
    # Triple every later price with noise and multiply the volume: a regime the
    # training part never saw.
    for column in PRICES:
        changed.loc[later, column] = changed.loc[later, column] * 3 * rng.uniform(0.8, 1.2, len(later))
    changed.loc[later, "volume"] = changed.loc[later, "volume"] * 50
    after = prepare(changed, SPEC, 0.15, 0.15)
    assert after.bounds == before.bounds
    for key, value in before.scaler.to_json().items():
        assert after.scaler.to_json()[key] == value, key
    np.testing.assert_array_equal(after.parts["train"][0], before.parts["train"][0])
    # The later parts did change, so the equality above is not vacuous.
    assert not np.array_equal(after.parts["test"][0], before.parts["test"][0])


def test_changing_a_training_row_does_change_the_scaler(small_clean: CleanResult) -> None:
    # The counterpart of the no-leakage proof: the scaler is fitted on something.
    frame = small_clean.frame.copy()
    before = prepare(frame, SPEC, 0.15, 0.15)
    frame.loc[5:50, "close"] = frame.loc[5:50, "close"] * 1.5
    after = prepare(frame, SPEC, 0.15, 0.15)
    assert after.scaler.to_json()["feature_center"] != before.scaler.to_json()["feature_center"]


def test_relative_transform_is_scale_free(small_clean: CleanResult) -> None:
    frame = small_clean.frame
    thousandfold = frame.copy()
    thousandfold[list(PRICES)] = thousandfold[list(PRICES)] * 1000
    base = prepare(frame, SPEC, 0.15, 0.15)
    scaled_up = prepare(thousandfold, SPEC, 0.15, 0.15)
    for key in ("feature_center", "feature_scale", "target_center", "target_scale"):
        np.testing.assert_allclose(getattr(scaled_up.scaler, key), getattr(base.scaler, key), rtol=1e-9, atol=1e-12)
    for part in ("train", "test"):
        inputs = base.parts[part][0]
        np.testing.assert_allclose(
            features.scale_inputs(scaled_up.parts[part][0], SPEC, scaled_up.scaler),
            features.scale_inputs(inputs, SPEC, base.scaler),
            atol=1e-5,
        )
    # The same network output maps back to 1000x the price.
    inputs = base.parts["test"][0]
    outputs = np.linspace(-2, 2, len(inputs))[:, None]
    np.testing.assert_allclose(
        features.outputs_to_prices(inputs * np.array([1000, 1000, 1000, 1000, 1]), outputs, SPEC, base.scaler),
        features.outputs_to_prices(inputs, outputs, SPEC, base.scaler) * 1000,
        rtol=1e-12,
    )


def test_minmax_transform_scales_raw_price_levels(small_clean: CleanResult) -> None:
    spec = WindowSpec(features=SPEC.features, label="close", window=10, transform="minmax")
    prepared = prepare(small_clean.frame, spec, 0.15, 0.15)
    inputs, futures = prepared.parts["train"]
    scaled = features.scale_inputs(inputs, spec, prepared.scaler)
    assert prepared.scaler.kind == "minmax"
    assert scaled.min() >= 0 and scaled.max() <= 1
    targets = features.scale_targets(inputs, futures, spec, prepared.scaler)
    np.testing.assert_allclose(features.outputs_to_prices(inputs, targets, spec, prepared.scaler), futures, rtol=1e-6)


def test_scaled_targets_round_trip_to_prices(small_clean: CleanResult) -> None:
    prepared = prepare(small_clean.frame, SPEC, 0.15, 0.15)
    inputs, futures = prepared.parts["test"]
    targets = features.scale_targets(inputs, futures, SPEC, prepared.scaler).astype(np.float64)
    np.testing.assert_allclose(features.outputs_to_prices(inputs, targets, SPEC, prepared.scaler), futures, rtol=1e-5)


def test_split_needs_enough_rows() -> None:
    with pytest.raises(ConfigError, match=r"need at least 134 clean rows for window 10, horizon 1 .* got 100"):
        features.chronological_split(100, SPEC, 0.15, 0.15)


def test_split_error_reports_longer_windows() -> None:
    spec = WindowSpec(features=SPEC.features, label="close", window=40, horizon=5)
    with pytest.raises(ConfigError, match=r"need at least 360 clean rows for window 40, horizon 5 .* got 359"):
        features.chronological_split(359, spec, 0.15, 0.15)
    assert features.chronological_split(360, spec, 0.15, 0.15).rows == 360


@pytest.mark.parametrize(("validation", "test"), [(0.0, 0.15), (0.15, 1.0), (0.5, 0.5)])
def test_split_fractions_are_checked(validation: float, test: float) -> None:
    with pytest.raises(ConfigError, match="fraction"):
        features.chronological_split(1000, SPEC, validation, test)


def test_split_is_chronological_and_complete() -> None:
    bounds = features.chronological_split(1000, SPEC, 0.15, 0.15)
    assert (bounds.train_end, bounds.validation_end, bounds.rows) == (700, 850, 1000)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"window": 1}, "window must be at least 2"),
        ({"horizon": 0}, "horizon must be at least 1"),
        ({"label": "adj_close"}, "label 'adj_close' must be one of the features"),
        ({"features": ("close", "volume"), "label": "volume"}, "label must be a price column"),
        ({"features": ("close", "close")}, "features repeat a column"),
        ({"features": ("close", "openint")}, r"feature column\(s\) \['openint'\] are not supported"),
        ({"transform": "log"}, "transform must be one of"),
    ],
)
def test_window_spec_refuses_bad_settings(arguments: dict, message: str) -> None:
    values = {"features": SPEC.features, "label": "close", "window": 10, **arguments}
    with pytest.raises(ConfigError, match=message):
        WindowSpec(**values)


def test_scaler_json_round_trip(small_clean: CleanResult) -> None:
    scaler = prepare(small_clean.frame, SPEC, 0.15, 0.15).scaler
    again = Scaler.from_json(scaler.to_json())
    for key in ("feature_center", "feature_scale", "target_center", "target_scale"):
        np.testing.assert_array_equal(getattr(again, key), getattr(scaler, key))


@pytest.mark.parametrize(
    "change",
    [
        {"feature_scale": [1, 1, 0, 1, 1]},
        {"target_center": [float("nan")]},
        {"kind": "pickle"},
        {"feature_center": "x"},
    ],
)
def test_scaler_json_refuses_bad_numbers(change: dict) -> None:
    good = Scaler(
        kind="standard",
        feature_center=np.zeros(5),
        feature_scale=np.ones(5),
        target_center=np.zeros(1),
        target_scale=np.ones(1),
    ).to_json()
    with pytest.raises(ValueError):
        Scaler.from_json({**good, **change})


def test_a_zero_volume_row_encodes_as_the_window_mean_not_a_spike() -> None:
    window = counting_frame(10)[list(SPEC.features)].to_numpy(dtype=np.float64)[None]
    halted = window.copy()
    halted[0, 4, 4] = 0.0  # a halt: no volume that session
    encoded = features.encode_inputs(halted, SPEC)[0, :, 4]
    traded = np.log1p(np.delete(window[0, :, 4], 4))
    assert encoded[4] == 0.0
    np.testing.assert_allclose(np.delete(encoded, 4), traded - traded.mean())
    assert np.abs(encoded).max() < 0.01
    # A window with no traded row at all carries no volume signal.
    silent = window.copy()
    silent[:, :, 4] = 0.0
    assert not features.encode_inputs(silent, SPEC)[0, :, 4].any()


def spiked_frame(rows: int, spikes: tuple[int, ...]) -> pd.DataFrame:
    """A calm walk with masking on and a one-day spike (x3, then back) of the close at each row in `spikes`."""
    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, rows)))
    close[list(spikes)] *= 3
    frame = pd.DataFrame({"date": pd.bdate_range("2020-01-01", periods=rows), "close": close})
    frame["outlier"] = False  # masking on; the rows are the fit's to find
    return frame


CLOSE_SPEC = WindowSpec(features=("close",), label="close", window=10, horizon=2)


def test_masking_leaves_outliers_out_of_training_but_scores_them() -> None:
    unmasked = prepare(spiked_frame(400, (100, 350)).drop(columns="outlier"), CLOSE_SPEC, 0.15, 0.15)
    masked = prepare(spiked_frame(400, (100, 350)), CLOSE_SPEC, 0.15, 0.15)
    # Row 100 is a training row: the 13 windows whose rows touch 100 or 101 leave training.
    assert len(masked.parts["train"][0]) == len(unmasked.parts["train"][0]) - 13
    # Row 350 is a test row: every test window stays, the spike's among them.
    assert len(masked.parts["test"][0]) == len(unmasked.parts["test"][0])
    assert masked.parts["test"][1].max() == unmasked.parts["test"][1].max() > 250
    assert len(masked.parts["calibration"][0]) == len(unmasked.parts["calibration"][0])


def test_each_fold_masks_by_the_rule_fitted_on_its_own_training_rows() -> None:
    frame = spiked_frame(600, (330,))
    spec = CLOSE_SPEC
    values = frame[["close"]].to_numpy(dtype=np.float64)
    first, second = plan_folds(len(frame), spec, folds=2, stride=100, validation_share=0.2)
    assert first.validation_start <= 330 < second.validation_start
    # The spike is past the first fold's training rows: nothing to mask there, and its test keeps every window.
    assert not outlier_mask(frame, spec, first.validation_start)[: first.validation_start].any()
    mask = outlier_mask(frame, spec, second.validation_start)
    assert mask is not None and mask[330] and mask[331]
    fold = prepare_fold(values, spec, second, mask)
    assert len(fold.train[0]) == len(prepare_fold(values, spec, second).train[0]) - 13
    assert len(fold.test[0]) == len(prepare_fold(values, spec, second).test[0])
