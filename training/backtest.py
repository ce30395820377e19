"""Walk-forward backtest: expanding-window folds, everything refitted inside each fold.

The protocol is that of Darts' `historical_forecasts` and skforecast's
`TimeSeriesFold`. The last `folds * stride` rows are cut into `folds`
consecutive test segments of `stride` rows. Fold k knows only the rows before
its cut: the tail of them is its validation part (early stopping and conformal
calibration), the rest its training part (scaler, network and ridge baseline).
It then forecasts every origin whose `horizon` future rows all lie inside its
test segment. A forecast's input window may reach back into the fold's
earlier rows, because at the forecast origin they are the past; its targets
never leave the segment, so no target is scored twice and no target of one
part is the input of a model fitted on it.

Every window is scored in price units with `training.evaluation` for the
network and the baselines of `training.baselines` (naive last value, drift,
and a ridge regression on lagged log returns), and the conformal intervals (calibrated on the fold's
validation windows) are checked against the outcomes. Folds are pooled for
the summary that the promotion gate reads.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from training import conformal, evaluation, features
from training.baselines import BASELINES, RidgeBaseline, unfitted_forecasts
from training.baselines import descriptions as baseline_descriptions
from training.config import TrainConfig
from training.data import DATE_COLUMN
from training.errors import ConfigError
from training.features import Scaler, SplitBounds, WindowSpec
from training.pipeline import FoldCallback, PreparedData, StopCheck, fit_network, predict_prices

# Fewer windows than this in a fold's training or validation part make its
# fit or its interval calibration meaningless (same floor as the main split).
MIN_WINDOWS = 10


@dataclass(frozen=True)
class Fold:
    """Row boundaries of one fold: train [0, validation_start), validation up to cut, test [cut, test_end)."""

    index: int
    validation_start: int
    cut: int
    test_end: int


@dataclass
class FoldData:
    """Raw windows of each part of one fold and the scaler fitted on its training windows."""

    fold: Fold
    train: tuple[np.ndarray, np.ndarray]
    validation: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    scaler: Scaler


def resolve_stride(rows: int, config: TrainConfig) -> int:
    """Rows per test segment: the configured stride, or the test fraction spread over the folds."""
    if config.backtest_stride > 0:
        return config.backtest_stride
    return max(1, round(rows * config.test_fraction / max(config.backtest_folds, 1)))


def plan_folds(rows: int, spec: WindowSpec, folds: int, stride: int, validation_share: float) -> list[Fold]:
    """Fold boundaries, oldest first; raises ConfigError when a part cannot hold enough windows.

    `validation_share` is the fraction of each fold's known rows kept as its
    validation tail.
    """
    if folds < 1:
        raise ConfigError(f"backtest needs at least 1 fold, got {folds}")
    if stride < spec.horizon:
        raise ConfigError(
            f"backtest stride ({stride} rows) must be at least the horizon ({spec.horizon}) "
            "so that each test segment holds a whole forecast"
        )
    if not 0 < validation_share < 1:
        raise ConfigError(f"validation share must be between 0 and 1, got {validation_share}")
    plan = []
    for index in range(folds):
        cut = rows - (folds - index) * stride
        validation_rows = round(cut * validation_share)
        validation_start = cut - validation_rows
        train_windows = validation_start - spec.window - spec.horizon + 1
        validation_windows = validation_rows - spec.horizon + 1
        if train_windows < MIN_WINDOWS or validation_windows < MIN_WINDOWS or validation_start < spec.window:
            needed = folds * stride + spec.window + spec.horizon + MIN_WINDOWS
            raise ConfigError(
                f"not enough rows for a {folds}-fold backtest with stride {stride}: fold {index + 1} has "
                f"{max(train_windows, 0)} training and {max(validation_windows, 0)} validation windows "
                f"(needs {MIN_WINDOWS} each); use fewer folds, a smaller stride, or more than {needed} rows"
            )
        plan.append(Fold(index=index, validation_start=validation_start, cut=cut, test_end=cut + stride))
    return plan


def _windows_with_targets_in(
    values: np.ndarray, spec: WindowSpec, first_target: int, stop: int
) -> tuple[np.ndarray, np.ndarray]:
    """Windows whose every future row lies in [first_target, stop); inputs reach back before first_target."""
    return features.make_windows(values[first_target - spec.window : stop], spec)


def prepare_fold(values: np.ndarray, spec: WindowSpec, fold: Fold) -> FoldData:
    """Window one fold's parts and fit its scaler on its training windows only."""
    train = features.make_windows(values[: fold.validation_start], spec)
    validation = _windows_with_targets_in(values, spec, fold.validation_start, fold.cut)
    test = _windows_with_targets_in(values, spec, fold.cut, fold.test_end)
    return FoldData(fold=fold, train=train, validation=validation, test=test, scaler=features.fit_scaler(*train, spec))


# The walk-forward loop -------------------------------------------------------


def _date(dates: pd.Series | None, row: int) -> str | int:
    """The date of a row, or its index when the frame carries no dates."""
    if dates is None:
        return row
    return str(pd.Timestamp(dates.iloc[row]).strftime("%Y-%m-%d"))


@dataclass
class _Fitted:
    """What one refit produces and later folds may reuse (refit='once')."""

    scaler: Scaler
    model: Any
    ridge: RidgeBaseline
    intervals: dict[str, Any]
    epochs_run: int
    fitted_in_fold: int


def _fit_fold(config: TrainConfig, data: FoldData, should_stop: StopCheck | None) -> _Fitted:
    spec = config.window_spec()
    fold = data.fold
    prepared = PreparedData(
        spec=spec,
        bounds=SplitBounds(train_end=fold.validation_start, validation_end=fold.cut, rows=fold.test_end),
        scaler=data.scaler,
        parts={"train": data.train, "validation": data.validation, "test": data.test},
        dates={},
    )
    model, epochs_run = fit_network(config, prepared, should_stop=should_stop)
    validation_inputs, validation_futures = data.validation
    validation_forecast = predict_prices(model, validation_inputs, spec, data.scaler)
    intervals = conformal.calibrate_intervals(
        validation_inputs,
        validation_futures,
        validation_forecast,
        spec,
        config.interval_levels,
        score=config.interval_score,
    )
    # The ridge sees every row before the cut: it has no early stopping that
    # would need the validation part held out.
    ridge = RidgeBaseline.fit(
        np.concatenate([data.train[0], validation_inputs]), np.concatenate([data.train[1], validation_futures]), spec
    )
    return _Fitted(data.scaler, model, ridge, intervals, epochs_run, fold.index)


def _pooled(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.empty((0, 0))


def run_backtest(
    frame: pd.DataFrame,
    config: TrainConfig,
    should_stop: StopCheck | None = None,
    on_fold: FoldCallback | None = None,
) -> dict[str, Any]:
    """Walk-forward backtest of `config` on a clean price frame; a JSON-ready report.

    `on_fold(done, total, fold_report)` is called after each fold. When
    `should_stop()` turns true the remaining folds are skipped and the report
    says so (`protocol.stopped`); the summary then covers the finished folds.
    """
    started = time.perf_counter()
    spec = config.window_spec()
    missing = [column for column in spec.features if column not in frame.columns]
    if missing:
        raise ConfigError(f"feature column(s) {missing} are not in the data; it has {list(frame.columns)}")
    values = frame[list(spec.features)].to_numpy(dtype=np.float64)
    dates = frame[DATE_COLUMN] if DATE_COLUMN in frame.columns else None
    folds = max(config.backtest_folds, 1)
    stride = resolve_stride(len(values), config)
    # Keep the main split's train:validation ratio inside every fold.
    validation_share = config.validation_fraction / (1 - config.test_fraction)
    plan = plan_folds(len(values), spec, folds, stride, validation_share)

    reports: list[dict[str, Any]] = []
    pooled: dict[str, list[np.ndarray]] = {"actual": [], "last": [], "model": [], "naive": [], "drift": [], "ridge": []}
    pooled_bounds: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}
    fitted: _Fitted | None = None
    stopped = False
    for fold in plan:
        if should_stop is not None and should_stop():
            stopped = True
            break
        data = prepare_fold(values, spec, fold)
        if fitted is None or config.backtest_refit == "every":
            fitted = _fit_fold(config, data, should_stop)
        test_inputs, test_futures = data.test
        label_windows = test_inputs[:, :, spec.label_index]
        last = label_windows[:, -1]
        forecasts = {
            "model": predict_prices(fitted.model, test_inputs, spec, fitted.scaler),
            **unfitted_forecasts(label_windows, spec.horizon),
            "ridge": fitted.ridge.predict(test_inputs),
        }
        bounds = conformal.bounds_for(test_inputs, forecasts["model"], fitted.intervals, spec)
        report: dict[str, Any] = {
            "fold": fold.index + 1,
            "train_start": _date(dates, 0),
            "train_end": _date(dates, fold.cut - 1),
            "validation_start": _date(dates, fold.validation_start),
            "test_start": _date(dates, fold.cut),
            "test_end": _date(dates, fold.test_end - 1),
            "rows": {"train": fold.validation_start, "validation": fold.cut - fold.validation_start, "test": stride},
            "windows": len(test_inputs),
            "train_windows": len(data.train[0]),
            "validation_windows": len(data.validation[0]),
            "fitted_in_fold": fitted.fitted_in_fold + 1,
            "epochs_run": fitted.epochs_run,
            "ridge_alphas": fitted.ridge.alphas,
            **{name: evaluation.forecast_metrics(test_futures, forecast, last) for name, forecast in forecasts.items()},
            "coverage": conformal.coverage_of_bounds(test_futures, bounds),
        }
        reports.append(report)
        pooled["actual"].append(test_futures)
        pooled["last"].append(last)
        for name, forecast in forecasts.items():
            pooled[name].append(forecast)
        for key, (lower, upper) in bounds.items():
            pooled_bounds.setdefault(key, ([], []))
            pooled_bounds[key][0].append(lower)
            pooled_bounds[key][1].append(upper)
        if on_fold is not None:
            on_fold(fold.index + 1, len(plan), report)

    summary: dict[str, Any] = {}
    coverage: dict[str, Any] = {}
    if reports:
        actual, last = _pooled(pooled["actual"]), _pooled(pooled["last"])
        summary = {
            name: evaluation.forecast_metrics(actual, _pooled(pooled[name]), last) for name in ("model", *BASELINES)
        }
        coverage = conformal.coverage_of_bounds(
            actual, {key: (_pooled(lower), _pooled(upper)) for key, (lower, upper) in pooled_bounds.items()}
        )
    return {
        "folds": reports,
        "summary": summary,
        "coverage": coverage,
        "protocol": {
            "kind": "walk-forward, expanding window",
            "folds": len(plan),
            "folds_run": len(reports),
            "stride": stride,
            "refit": config.backtest_refit,
            "window": spec.window,
            "horizon": spec.horizon,
            "validation_share": round(validation_share, 6),
            "test_windows": "every origin whose targets lie inside the fold's test segment; "
            "inputs may reach back into earlier rows",
            "intervals": conformal.METHOD_DESCRIPTIONS[config.interval_score]
            + ", calibrated on each fold's validation windows",
            "levels": [conformal.level_key(level) for level in config.interval_levels],
            "baselines": baseline_descriptions(spec),
            "stopped": stopped,
            "seconds": round(time.perf_counter() - started, 3),
        },
    }
