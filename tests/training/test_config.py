"""TrainConfig: each hyper-parameter defined once, and a value out of bounds refused up front, naming the bound."""

from __future__ import annotations

from typing import Any

import pytest

from training.config import MAX_SEED, TrainConfig, bounds_text
from training.errors import ConfigError


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"seed": -1}, "seed: Input should be greater than or equal to 0, got -1"),
        ({"seed": 10**30}, f"seed: Input should be less than or equal to {MAX_SEED}, got {10**30}"),
        ({"backtest_stride": 10**6}, "backtest_stride: Input should be less than or equal to 10000, got 1000000"),
        ({"backtest_folds": 21}, "backtest_folds: Input should be less than or equal to 20, got 21"),
        ({"epochs": 0}, "epochs: Input should be greater than or equal to 1, got 0"),
        ({"units": 100_000}, "units: Input should be less than or equal to 1024, got 100000"),
        ({"window": 1}, "window: Input should be greater than or equal to 2, got 1"),
        ({"learning_rate": float("nan")}, "learning_rate: Input should be a finite number, got nan"),
        (
            {"architecture": "transformer"},
            "architecture: Input should be 'lstm', 'simple_rnn' or 'gru', got 'transformer'",
        ),
        ({"backtest_refit": "never"}, "backtest_refit: Input should be 'every' or 'once', got 'never'"),
        ({"interval_levels": (0.9, 1.5)}, "interval_levels.1: Input should be less than 1, got 1.5"),
        ({"epoch": 3}, "epoch: Extra inputs are not permitted, got 3"),
    ],
)
def test_a_value_out_of_bounds_is_refused_naming_the_field_and_the_bound(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        TrainConfig(**values)
    assert str(raised.value) == message
    assert raised.value.status_code == 422


def test_fields_that_disagree_are_refused_by_the_window_rules() -> None:
    with pytest.raises(ConfigError) as raised:
        TrainConfig(features=("open", "close"), label="high")
    assert str(raised.value) == (
        "label 'high' must be one of the features ['open', 'close']: "
        "the forecast is expressed relative to the label's last value in the window"
    )


def test_the_largest_seed_numpy_and_tensorflow_accept_is_allowed() -> None:
    assert TrainConfig(seed=MAX_SEED).seed == 2**32 - 1


def test_replace_checks_the_new_values() -> None:
    config = TrainConfig(epochs=3)
    assert config.replace(units=8) == TrainConfig(epochs=3, units=8)
    with pytest.raises(ConfigError) as raised:
        config.replace(seed=-5)
    assert str(raised.value) == "seed: Input should be greater than or equal to 0, got -5"


def test_an_unknown_calendar_is_refused() -> None:
    with pytest.raises(ConfigError) as raised:
        TrainConfig(calendar="MOON")
    assert str(raised.value) == (
        "unknown trading calendar 'MOON'; use an exchange_calendars code such as XNYS, XNAS, XLON, XKRX, XTKS, "
        "or '24/7' for markets that never close"
    )


def test_hyperparameters_keep_the_metadata_keys_and_json_types() -> None:
    # Stored versions record these keys in this order; the store format must not change.
    recorded = TrainConfig(features=["open", "close"]).hyperparameters()
    assert list(recorded) == [
        "architecture", "features", "label", "window", "horizon", "transform", "units", "layers", "dropout",
        "learning_rate", "batch_size", "epochs", "patience", "seed", "validation_fraction", "test_fraction",
        "interval_levels", "interval_score", "backtest_folds", "backtest_stride", "backtest_refit", "shuffle_labels",
        # Added by the forecast-honesty work; older versions lack them and read as the defaults.
        "interval_band", "calibration", "calibration_share", "production_refit", "calendar",
    ]  # fmt: skip
    assert recorded["features"] == ["open", "close"]
    assert recorded["interval_levels"] == [0.8, 0.9, 0.95]


@pytest.mark.parametrize(
    ("field", "text"),
    [("window", "2 to 500"), ("dropout", "at least 0, less than 1"), ("learning_rate", "greater than 0, at most 1")],
)
def test_bounds_in_words(field: str, text: str) -> None:
    assert bounds_text(TrainConfig.model_fields[field]) == text
