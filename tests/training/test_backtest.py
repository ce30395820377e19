"""Walk-forward backtest: fold geometry, no look-ahead, and the gate it feeds."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.helpers import ar_returns_prices
from training.backtest import plan_folds, prepare_fold, walk_forward
from training.baselines import RidgeBaseline
from training.calendars import sessions_after
from training.config import TrainConfig
from training.data import CleanResult, load_prices
from training.errors import ConfigError
from training.fitting import TrainingRun
from training.promotion import train_and_promote
from training.spec import WindowSpec
from training.store import CHAMPION, ModelStore

pytestmark = pytest.mark.tf

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample" / "msft.csv"
SPEC = WindowSpec(features=("close",), label="close", window=10, horizon=3)
TINY: dict[str, Any] = {"units": 4, "epochs": 1, "window": 10, "batch_size": 64, "patience": 0}


def price_frame(close: np.ndarray) -> pd.DataFrame:
    """A clean OHLCV frame around a close series, on XNYS sessions."""
    close = np.asarray(close, dtype=float)
    return pd.DataFrame(
        {
            "date": pd.to_datetime(sessions_after(dt.date(2000, 12, 29), len(close))),
            "open": close,
            "high": close * 1.01,
            "low": close * 0.99,
            "close": close,
            "volume": np.full(len(close), 1e6),
        }
    )


@pytest.fixture(scope="module")
def sample_frame() -> pd.DataFrame:
    """The last 700 rows of the bundled MSFT sample."""
    return load_prices(SAMPLE).frame.iloc[-700:].reset_index(drop=True)


# Fold geometry ---------------------------------------------------------------


def test_folds_tile_the_last_rows_into_consecutive_test_segments() -> None:
    plan = plan_folds(1000, SPEC, folds=3, stride=100, validation_share=0.2)
    assert [(fold.cut, fold.test_end) for fold in plan] == [(700, 800), (800, 900), (900, 1000)]
    assert [fold.validation_start for fold in plan] == [560, 640, 720]


def test_each_part_of_a_fold_holds_only_its_own_targets() -> None:
    # Each value is its row number, so a window's futures name the rows they came from.
    values = np.arange(1, 1001, dtype=float)[:, None]
    fold = plan_folds(1000, SPEC, folds=3, stride=100, validation_share=0.2)[1]
    data = prepare_fold(values, SPEC, fold)
    train_inputs, train_futures = data.train
    validation_inputs, validation_futures = data.validation
    calibration_inputs, calibration_futures = data.calibration
    test_inputs, test_futures = data.test
    rows = {part: futures - 1 for part, futures in (("train", train_futures), ("test", test_futures))}
    assert rows["train"].max() == fold.validation_start - 1
    # Early stopping on the first half of the validation tail, calibration on
    # the second, horizon - 1 rows apart: no target in both.
    assert (validation_futures - 1).min() == fold.validation_start
    assert (validation_futures - 1).max() == fold.early_stopping_stop - 1
    assert (calibration_futures - 1).min() == fold.calibration_start
    assert (calibration_futures - 1).max() == fold.cut - 1
    assert fold.calibration_start - fold.early_stopping_stop == SPEC.horizon - 1
    assert fold.cut - fold.calibration_start == round((fold.cut - fold.validation_start) * 0.5)
    assert rows["test"].min() == fold.cut
    assert rows["test"].max() == fold.test_end - 1
    # Every origin whose targets fit in the segment: stride - horizon + 1 windows.
    assert len(test_inputs) == 100 - SPEC.horizon + 1
    assert len(validation_inputs) == fold.early_stopping_stop - fold.validation_start - SPEC.horizon + 1
    assert len(calibration_inputs) == fold.cut - fold.calibration_start - SPEC.horizon + 1
    assert len(train_inputs) == fold.validation_start - SPEC.window - SPEC.horizon + 1
    # A test window's inputs are the rows just before its first target.
    np.testing.assert_array_equal(test_inputs[0, :, 0] - 1, np.arange(fold.cut - SPEC.window, fold.cut))


def test_a_fold_without_room_for_its_training_windows_is_refused() -> None:
    with pytest.raises(ConfigError, match="not enough rows for a 5-fold backtest"):
        plan_folds(300, SPEC, folds=5, stride=50, validation_share=0.2)


def test_a_stride_shorter_than_the_horizon_is_refused() -> None:
    with pytest.raises(ConfigError, match="at least the horizon"):
        plan_folds(1000, SPEC, folds=2, stride=2, validation_share=0.2)


@pytest.mark.parametrize("changed_from", ["cut", "test_end"])
def test_a_fold_never_sees_rows_after_its_cut(changed_from: str) -> None:
    rng = np.random.default_rng(0)
    values = ar_returns_prices(1000, 0.3, seed=1)[:, None]
    fold = plan_folds(1000, SPEC, folds=3, stride=100, validation_share=0.2)[0]
    altered = values.copy()
    start = getattr(fold, changed_from)
    altered[start:] *= rng.uniform(0.5, 2.0, size=altered[start:].shape)

    def fitted(rows: np.ndarray) -> tuple[np.ndarray, ...]:
        data = prepare_fold(rows, SPEC, fold)
        inputs = np.concatenate([data.train[0], data.validation[0]])
        futures = np.concatenate([data.train[1], data.validation[1]])
        ridge = RidgeBaseline.fit(inputs, futures, SPEC).model[-1]
        return data.scaler.feature_center, data.scaler.target_scale, ridge.coef_, ridge.intercept_

    for before, after in zip(fitted(values), fitted(altered), strict=True):
        np.testing.assert_array_equal(before, after)


def test_the_no_look_ahead_check_notices_a_change_before_the_cut() -> None:
    values = ar_returns_prices(1000, 0.3, seed=1)[:, None]
    fold = plan_folds(1000, SPEC, folds=3, stride=100, validation_share=0.2)[0]
    altered = values.copy()
    altered[fold.cut - 50 :] *= 1.5
    before = prepare_fold(values, SPEC, fold)
    after = prepare_fold(altered, SPEC, fold)
    assert not np.array_equal(before.calibration[1], after.calibration[1])


# The whole backtest ----------------------------------------------------------


def test_backtest_reports_every_fold_and_pools_them(sample_frame: pd.DataFrame) -> None:
    config = TrainConfig(**TINY, horizon=2, backtest_folds=2, backtest_stride=40)
    seen: list[tuple[int, int]] = []
    report = walk_forward(sample_frame, config, on_fold=lambda done, total, _: seen.append((done, total))).report

    assert seen == [(1, 2), (2, 2)]
    folds = report["folds"]
    assert [fold["windows"] for fold in folds] == [39, 39]
    assert folds[0]["test_start"] == sample_frame["date"].iloc[-80].strftime("%Y-%m-%d")
    assert folds[1]["test_end"] == sample_frame["date"].iloc[-1].strftime("%Y-%m-%d")
    assert folds[0]["train_end"] < folds[0]["test_start"] <= folds[0]["test_end"] < folds[1]["test_start"]
    for fold in folds:
        for name in ("model", "naive", "drift", "ridge"):
            assert len(fold[name]["per_step"]) == 2
        assert fold["naive"]["mae_ratio_to_naive"] == pytest.approx(1.0)
        assert fold["naive"]["mase"] > 0
    summary = report["summary"]
    assert set(summary) == {"model", "naive", "drift", "ridge"}
    assert summary["model"]["windows"] == 78
    assert summary["model"]["mae_ratio_to_naive"] > 0
    evidence = report["evidence"]
    assert evidence["vs_naive_step_1"]["windows"] == 78 and evidence["vs_naive_pooled"]["lag"] == 1
    assert 0 <= evidence["vs_naive_pooled"]["p_value"] <= 1
    # Per-step bands are judged step by step; step 2 on every second window (its outcomes overlap).
    steps = evidence["coverage_90"]["steps"]
    assert [(step["windows"], step["every_nth_window"]) for step in steps] == [(78, 1), (39, 2)]
    assert evidence["loss"].startswith("|log(actual / forecast)|") and "vs_naive_pooled" in evidence["price_units"]
    assert set(report["sharpness"]) == {"80", "90", "95"}
    assert report["sharpness"]["90"]["winkler_empirical_baseline"] > 0
    assert report["coverage_alternatives"]["walk_forward_residuals"]["folds"] == 1
    assert set(report["coverage"]) == {"80", "90", "95"}
    assert report["coverage"]["80"]["mean_width"] < report["coverage"]["95"]["mean_width"]
    assert report["protocol"]["stride"] == 40
    assert report["protocol"]["stopped"] is False
    json.dumps(report)


def test_refit_once_fits_in_the_first_fold_only(sample_frame: pd.DataFrame) -> None:
    config = TrainConfig(**TINY, backtest_folds=3, backtest_stride=30, backtest_refit="once")
    report = walk_forward(sample_frame, config).report
    assert [fold["fitted_in_fold"] for fold in report["folds"]] == [1, 1, 1]
    assert report["protocol"]["refit"] == "once"


def test_a_stop_request_skips_the_remaining_folds(sample_frame: pd.DataFrame) -> None:
    config = TrainConfig(**TINY, backtest_folds=2, backtest_stride=30)
    report = walk_forward(sample_frame, config, should_stop=lambda: True).report
    assert report["folds"] == []
    assert report["summary"] == {}
    assert report["protocol"]["stopped"] is True


# The gate reads the backtest -------------------------------------------------


def test_a_synthetic_series_that_beats_naive_is_promoted_on_evidence(tmp_path: Path) -> None:
    # Strongly autocorrelated returns give a small network something real to learn.
    clean = CleanResult(frame=price_frame(ar_returns_prices(900, 0.6, seed=5)), rows_read=900)
    store = ModelStore(tmp_path / "models")
    # A champion put in place by hand with another window: it cannot be re-scored like for like.
    other = TrainConfig(units=4, window=12, batch_size=64, epochs=1, patience=0, backtest_folds=0)
    champion, _ = train_and_promote(TrainingRun("ar", clean, {"name": "synthetic.csv", "sha256": "s"}, other), store)
    store.set_alias("ar", CHAMPION, champion.version, reason="by hand")
    config = TrainConfig(units=8, window=10, batch_size=32, backtest_folds=2, backtest_stride=60, epochs=12, patience=3)
    good, decision = train_and_promote(
        TrainingRun("ar", clean, {"name": "synthetic.csv", "sha256": "s"}, config), store
    )

    assert decision.promoted, decision.reason
    assert decision.reason.startswith("beats naive and drift with evidence: DM -")
    assert decision.ratio_to_naive is not None and decision.ratio_to_naive < 0.95
    assert decision.evidence["vs_naive_step_1"]["p_value"] < 0.05
    assert decision.evidence["vs_naive_pooled"]["p_value"] < 0.05
    assert decision.evidence["dataset_sha256"] == "s" and decision.evidence["horizon"] == 1
    # Not comparable, said so, and nothing raised inside the alias lock: the version stays, promoted.
    assert decision.evidence["champion"] == "not comparable: another window (window 12 vs 10)"
    assert store.versions("ar") == [1, 2]
    assert store.aliases("ar")[CHAMPION] == good.version
    assert [entry["version"] for entry in store.attempts("ar")] == [1, 2]
    assert good.metadata["skill"]["beats_naive"] is True
    # The served network is the production refit: trained through the last row.
    assert good.metadata["trained_through"] == clean.frame["date"].iloc[-1].strftime("%Y-%m-%d")


def test_a_shuffled_label_horizon_5_network_is_refused_with_no_champion(
    tmp_path: Path, sample_frame: pd.DataFrame
) -> None:
    clean = CleanResult(frame=sample_frame, rows_read=len(sample_frame))
    store = ModelStore(tmp_path / "models")
    config = TrainConfig(**TINY, horizon=5, shuffle_labels=True, backtest_folds=2, backtest_stride=60)
    bad, decision = train_and_promote(
        TrainingRun("shuffled", clean, {"name": "msft.csv", "sha256": "m"}, config), store
    )

    assert not decision.promoted
    assert decision.champion_version is None
    assert decision.reason.startswith(("no evidence of skill at step 1: DM ", "no evidence of skill pooled over steps"))
    assert "p " in decision.reason and "against naive (needs p < 0.025, the level of attempt 1)" in decision.reason
    assert decision.evidence["period"] == {
        "start": bad.metadata["backtest"]["folds"][0]["test_start"],
        "end": bad.metadata["backtest"]["folds"][-1]["test_end"],
    }
    assert CHAMPION not in store.aliases("shuffled")
    assert bad.metadata["skill"]["beats_naive"] is False
    # The decision is in the model's attempt ledger, where the next attempt on these folds will count it.
    (entry,) = store.attempts("shuffled")
    assert (entry["version"], entry["attempt"], entry["promoted"], entry["dataset_sha256"]) == (
        bad.version,
        1,
        False,
        "m",
    )
    assert entry["period"] == decision.evidence["period"] and entry["significance_level"] == 0.025
    assert entry["vs_naive_pooled"] == decision.evidence["vs_naive_pooled"]


def test_a_champion_configuration_is_rebuilt_for_the_candidates_folds() -> None:
    champion = TrainConfig(**TINY, horizon=5, backtest_folds=2, calendar="XKRX")
    recorded = TrainConfig.from_hyperparameters(champion.hyperparameters())
    assert recorded == champion
    candidate = TrainConfig(**TINY, horizon=5, backtest_folds=4, backtest_stride=30, calibration_share=0.4)
    rebuilt = recorded.with_backtest_of(candidate)
    assert (rebuilt.backtest_folds, rebuilt.backtest_stride, rebuilt.calibration_share) == (4, 30, 0.4)
    assert rebuilt.calendar == "XKRX" and rebuilt.units == champion.units


def regime_prices(count: int, change: int, seed: int) -> np.ndarray:
    """Prices whose daily log returns are a random walk's until row `change`, then an AR(1) with coefficient 0.6.

    A network fitted on the rows before a fold's validation tail sees less of the
    AR regime than the refit on every row before the cut: the refit changes the error.
    """
    rng = np.random.default_rng(seed)
    shocks = rng.normal(scale=0.01, size=count)
    returns = np.zeros(count)
    for day in range(1, count):
        returns[day] = (0.6 if day >= change else 0.0) * returns[day - 1] + shocks[day]
    return 50 * np.exp(np.cumsum(returns))


def test_the_backtest_scores_the_served_refit_and_its_coverage_holds_on_fresh_data(tmp_path: Path) -> None:
    import keras

    from training.artifact import load_preprocessing
    from training.conformal import bounds_for
    from training.features import make_windows
    from training.fitting import predict_prices
    from training.store import MODEL_FILE

    trained_rows, fresh_rows = 900, 700
    frame = price_frame(regime_prices(trained_rows + fresh_rows, change=450, seed=11))
    clean = CleanResult(frame=frame.iloc[:trained_rows].reset_index(drop=True), rows_read=trained_rows)
    store = ModelStore(tmp_path / "models")
    config = TrainConfig(
        units=4, window=10, batch_size=64, epochs=8, patience=2, backtest_folds=2, backtest_stride=150, seed=3
    )
    outcome, _ = train_and_promote(TrainingRun("regime", clean, {"name": "regime.csv", "sha256": "r"}, config), store)
    backtest = outcome.metadata["backtest"]
    assert backtest["protocol"]["procedure"].startswith("the production procedure in every fold")
    assert all(
        fold["refit"]["epochs"] >= 1 and fold["refit"]["windows"] > fold["train_windows"] for fold in backtest["folds"]
    )
    effect = backtest["evidence"]["refit_effect"]
    # The refit is not the network early stopping chose: its error differs.
    assert effect["log_loss_served"] != pytest.approx(effect["log_loss_early_stopped"], rel=0.005)
    reported = backtest["evidence"]["coverage_90"]["steps"][0]
    assert reported["coverage_all_windows"] == effect["coverage_90_served"]

    # The served network, as stored, on the next 700 rows it never saw.
    metadata, spec, scaler = load_preprocessing(store, "regime", outcome.version)
    model = keras.saving.load_model(store.version_dir("regime", outcome.version) / MODEL_FILE, compile=False)
    values = frame[list(spec.features)].to_numpy(dtype=np.float64)[trained_rows - spec.window :]
    inputs, futures = make_windows(values, spec)
    lower, upper = bounds_for(inputs, predict_prices(model, inputs, spec, scaler), metadata["intervals"], spec)["90"]
    realised = float(np.mean((futures >= lower) & (futures <= upper)))
    backtest_windows, fresh_windows = reported["windows"], len(futures)
    both = (reported["coverage"] * backtest_windows + realised * fresh_windows) / (backtest_windows + fresh_windows)
    tolerance = 3 * np.sqrt(both * (1 - both) * (1 / backtest_windows + 1 / fresh_windows))
    assert abs(reported["coverage"] - realised) <= tolerance, (reported["coverage"], realised, tolerance)
