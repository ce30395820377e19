"""Walk-forward backtest: expanding-window folds, everything refitted inside each fold.

`walk_forward` cuts the last `folds * stride` rows into consecutive test
segments, as Darts' `historical_forecasts` and skforecast's `TimeSeriesFold`
do. Fold k runs the production procedure on the rows before its cut only:
scaler and network with early stopping, intervals on its calibration block,
then (production_refit) the network refitted on every row before the cut
for the chosen epochs, which is what is scored, with the carried-over
half-widths; ridge and drift are fitted on the same rows. A window's inputs
may reach back past the cut (the past at its origin), its targets never
leave the segment. The network and its baselines are scored on the same
windows and pooled over folds; `evidence` holds what the promotion gate
reads, with the early-stopped network beside the refit (`refit_effect`).
Intervals calibrated on earlier folds' test residuals are measured beside
them (`coverage_alternatives`). See docs/design.md, "Walk-forward backtest (how)".
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from training import conformal, evaluation, features, significance
from training.baselines import BASELINES, RidgeBaseline, unfitted_forecasts
from training.baselines import descriptions as baseline_descriptions
from training.config import TrainConfig
from training.errors import ConfigError
from training.evidence import gate_evidence, log_errors
from training.features import Scaler, SplitBounds
from training.fitting import (
    FoldCallback,
    PreparedData,
    StopCheck,
    fit_network,
    outlier_mask,
    predict_prices,
    refit_on_all_rows,
)
from training.spec import DATE_COLUMN, WindowSpec

# The interval level whose coverage the gate checks.
GATE_LEVEL = 0.9
GATE_LEVEL_KEY = conformal.level_key(GATE_LEVEL)

# What each fold runs and scores, as the report says it.
PRODUCTION_PROCEDURE = (
    "the production procedure in every fold: early stopping on the fold's validation block chooses the epochs, "
    "the fold's calibration block gives the half-widths, then the network is refitted on every row before the "
    "cut for those epochs (as many passes over each window as the early-stopped run made; more windows, so "
    "more gradient steps) and scored with the carried-over half-widths: what is served is what is scored"
)
EARLY_STOPPED_PROCEDURE = "the early-stopped network of each fold, scored as calibrated (production_refit off)"

# Fewer windows than this in a fold's training or validation part make its
# fit or its interval calibration meaningless (same floor as the main split).
MIN_WINDOWS = 10


@dataclass(frozen=True)
class Fold:
    """Row boundaries of one fold: train [0, validation_start), validation up to cut, test [cut, test_end).

    The validation rows hold the early-stopping block's targets up to
    `early_stopping_stop` and the calibration block's from `calibration_start`.
    """

    index: int
    validation_start: int
    cut: int
    test_end: int
    early_stopping_stop: int = 0
    calibration_start: int = 0


@dataclass
class FoldData:
    """Raw windows of each part of one fold and the scaler fitted on its training windows."""

    fold: Fold
    train: tuple[np.ndarray, np.ndarray]
    validation: tuple[np.ndarray, np.ndarray]
    calibration: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    scaler: Scaler


def resolve_stride(rows: int, config: TrainConfig) -> int:
    """Rows per test segment: the configured stride, or the test fraction spread over the folds."""
    if config.backtest_stride > 0:
        return config.backtest_stride
    return max(1, round(rows * config.test_fraction / max(config.backtest_folds, 1)))


def plan_folds(
    rows: int,
    spec: WindowSpec,
    folds: int,
    stride: int,
    validation_share: float,
    calibration_share: float | None = 0.5,
) -> list[Fold]:
    """Fold boundaries, oldest first; raises ConfigError when a part cannot hold enough windows.

    `validation_share` is the fraction of each fold's known rows kept as its
    validation tail; `calibration_share` the fraction of that tail kept as
    the calibration block (None: the leaky variant, one shared block).
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
        if calibration_share is None:
            plan.append(Fold(index, validation_start, cut, cut + stride, cut, validation_start))
            continue
        blocks = features.tail_blocks(validation_start, cut, spec, calibration_share, MIN_WINDOWS)
        plan.append(
            Fold(index, validation_start, cut, cut + stride, blocks.early_stopping_stop, blocks.calibration_start)
        )
    return plan


def prepare_fold(values: np.ndarray, spec: WindowSpec, fold: Fold, masked: np.ndarray | None = None) -> FoldData:
    """Window one fold's parts and fit its scaler on its training windows only.

    `masked` (the fold's own outlier rows, `outlier_mask` fitted on its
    training rows) leaves windows out of training and early stopping only:
    calibration and test windows keep them, the tails a band must cover.
    """
    head = None if masked is None else masked[: fold.validation_start]
    train = features.make_windows(values[: fold.validation_start], spec, head)
    validation = features.windows_with_targets_in(values, spec, fold.validation_start, fold.early_stopping_stop, masked)
    calibration = features.windows_with_targets_in(values, spec, fold.calibration_start, fold.cut)
    test = features.windows_with_targets_in(values, spec, fold.cut, fold.test_end)
    return FoldData(
        fold=fold,
        train=train,
        validation=validation,
        calibration=calibration,
        test=test,
        scaler=features.fit_scaler(*train, spec),
    )


# The walk-forward loop -------------------------------------------------------


def _date(dates: pd.Series | None, row: int) -> str | int:
    """The date of a row, or its index when the frame carries no dates."""
    if dates is None:
        return row
    return str(pd.Timestamp(dates.iloc[row]).strftime("%Y-%m-%d"))


@dataclass
class _Fitted:
    """What one fold's fit produces and later folds may reuse (refit='once').

    `model` and `scaler` are the network the fold scores: with the production
    refit, the one refitted on every row before the cut; `early_stopped` is
    the network early stopping chose, whose calibration block gave `intervals`.
    """

    scaler: Scaler
    model: Any
    ridge: RidgeBaseline
    intervals: dict[str, Any]
    epochs_run: int
    fitted_in_fold: int
    early_stopped: tuple[Any, Scaler] | None = None
    refit: dict[str, Any] | None = None


def _fit_fold(config: TrainConfig, frame: pd.DataFrame, data: FoldData, should_stop: StopCheck | None) -> _Fitted:
    """What production runs, inside the fold: early stopping, calibration, then the refit on every row before the cut.

    The refit trains for the epochs early stopping chose (`training.fitting.train_version` does the same),
    and the fold's half-widths are carried over from the early-stopped network to it, as they are served.
    """
    spec = config.window_spec()
    fold = data.fold
    prepared = PreparedData(
        spec=spec,
        bounds=SplitBounds(train_end=fold.validation_start, validation_end=fold.cut, rows=fold.test_end),
        scaler=data.scaler,
        parts={"train": data.train, "validation": data.validation, "test": data.test},
        dates={},
    )
    model, epochs_run, best_epoch = fit_network(config, prepared, should_stop=should_stop)
    calibration_inputs, calibration_futures = data.calibration
    calibration_forecast = predict_prices(model, calibration_inputs, spec, data.scaler)
    intervals = conformal.calibrate_intervals(
        calibration_inputs,
        calibration_futures,
        calibration_forecast,
        spec,
        config.interval_levels,
        score=config.interval_score,
        band=config.interval_band,
    )
    # The ridge sees every row before the cut: it has no early stopping that
    # would need the validation part held out.
    shared = fold.calibration_start == fold.validation_start
    parts = (data.train, data.validation) if shared else (data.train, data.validation, data.calibration)
    ridge = RidgeBaseline.fit(
        np.concatenate([inputs for inputs, _ in parts]), np.concatenate([futures for _, futures in parts]), spec
    )
    if not config.production_refit:
        return _Fitted(data.scaler, model, ridge, intervals, epochs_run, fold.index)
    refitted, scaler, windows = refit_on_all_rows(config, frame.iloc[: fold.cut], best_epoch, should_stop=should_stop)
    refit = {"epochs": max(best_epoch, 1), "windows": windows}
    return _Fitted(scaler, refitted, ridge, intervals, epochs_run, fold.index, (model, data.scaler), refit)


def _refit_effect(
    arrays: dict[str, np.ndarray], bounds: tuple[np.ndarray, np.ndarray] | None, early_inside: list[np.ndarray]
) -> dict[str, Any]:
    """The served refit beside the early-stopped network it replaced: mean |log error| and 90 % coverage (all steps)."""
    actual = arrays["actual"]
    served_coverage = None
    if bounds is not None:
        served_coverage = float(np.mean((actual >= bounds[0]) & (actual <= bounds[1])))
    return {
        "log_loss_served": float(log_errors(actual, arrays["model"]).mean()),
        "log_loss_early_stopped": float(log_errors(actual, arrays["early_stopped"]).mean()),
        "coverage_90_served": served_coverage,
        "coverage_90_early_stopped": float(np.mean(np.concatenate(early_inside))) if early_inside else None,
        "note": "both with the half-widths calibrated on the early-stopped network; the gate judges the served one",
    }


def _pooled(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.empty((0, 0))


@dataclass
class BacktestRun:
    """The JSON report of a backtest and its pooled out-of-sample arrays, in time order.

    `forecasts` maps "actual", "last", "model" and each baseline to (windows,
    horizon) arrays (last: (windows,)); the gate pairs them with a champion
    re-scored on the same windows. Only `report` is stored.
    """

    report: dict[str, Any]
    forecasts: dict[str, np.ndarray]


def walk_forward(
    frame: pd.DataFrame,
    config: TrainConfig,
    should_stop: StopCheck | None = None,
    on_fold: FoldCallback | None = None,
    significance_level: float = 0.05,
) -> BacktestRun:
    """Walk-forward backtest of `config` on a clean price frame: the report and the pooled forecasts.

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
    label = values[:, spec.label_index]
    dates = frame[DATE_COLUMN] if DATE_COLUMN in frame.columns else None
    folds = max(config.backtest_folds, 1)
    stride = resolve_stride(len(values), config)
    # Keep the main split's train:validation ratio inside every fold.
    validation_share = config.validation_fraction / (1 - config.test_fraction)
    calibration_share = config.calibration_share if config.calibration == "disjoint" else None
    plan = plan_folds(len(values), spec, folds, stride, validation_share, calibration_share)

    reports: list[dict[str, Any]] = []
    names = ("model", *BASELINES)
    pooled: dict[str, list[np.ndarray]] = {"actual": [], "last": [], **{name: [] for name in names}}
    pooled_bounds: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}
    baseline_bounds: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}
    alternative: dict[str, list[np.ndarray]] = {"disjoint_blocks": [], "walk_forward_residuals": []}
    pooled_inputs: list[np.ndarray] = []
    early_inside: list[np.ndarray] = []
    scale: float | None = None
    log_scale: float | None = None
    fitted: _Fitted | None = None
    stopped = False
    for fold in plan:
        if should_stop is not None and should_stop():
            stopped = True
            break
        data = prepare_fold(values, spec, fold, outlier_mask(frame, spec, fold.validation_start))
        if fitted is None or config.backtest_refit == "every":
            fitted = _fit_fold(config, frame, data, should_stop)
        test_inputs, test_futures = data.test
        label_windows = test_inputs[:, :, spec.label_index]
        last = label_windows[:, -1]
        history = label[: fold.validation_start]
        scale, log_scale = evaluation.naive_scale(history), evaluation.naive_log_scale(history)
        forecasts = {
            "model": predict_prices(fitted.model, test_inputs, spec, fitted.scaler),
            # Full-history mean return: every row before the cut is the past.
            **unfitted_forecasts(label_windows, spec.horizon, label[: fold.cut]),
            "ridge": fitted.ridge.predict(test_inputs),
        }
        if fitted.early_stopped is not None:
            # Measured beside the served refit: what the refit changes in the error and the coverage.
            early_model, early_scaler = fitted.early_stopped
            forecasts["early_stopped"] = predict_prices(early_model, test_inputs, spec, early_scaler)
            early_bounds = conformal.bounds_for(test_inputs, forecasts["early_stopped"], fitted.intervals, spec)
            if GATE_LEVEL_KEY in early_bounds:
                low, high = early_bounds[GATE_LEVEL_KEY]
                early_inside.append((test_futures >= low) & (test_futures <= high))
        bounds = conformal.bounds_for(test_inputs, forecasts["model"], fitted.intervals, spec)
        empirical = conformal.empirical_bounds(
            test_inputs, conformal.empirical_band(*data.train, spec, config.interval_levels), spec
        )
        if pooled["model"] and GATE_LEVEL_KEY in bounds:
            # The alternative calibration: every earlier fold's out-of-sample residuals.
            widths = conformal.calibrate_intervals(
                np.concatenate(pooled_inputs),
                np.concatenate(pooled["actual"]),
                np.concatenate(pooled["model"]),
                spec,
                (GATE_LEVEL,),
                score=config.interval_score,
                band=config.interval_band,
            )
            if GATE_LEVEL_KEY in widths["half_widths"]:
                low, high = conformal.bounds_for(test_inputs, forecasts["model"], widths, spec)[GATE_LEVEL_KEY]
                alternative["walk_forward_residuals"].append((test_futures >= low) & (test_futures <= high))
                low, high = bounds[GATE_LEVEL_KEY]
                alternative["disjoint_blocks"].append((test_futures >= low) & (test_futures <= high))
        report: dict[str, Any] = {
            "fold": fold.index + 1,
            "train_start": _date(dates, 0),
            "train_end": _date(dates, fold.cut - 1),
            "validation_start": _date(dates, fold.validation_start),
            "calibration_start": _date(dates, fold.calibration_start),
            "test_start": _date(dates, fold.cut),
            "test_end": _date(dates, fold.test_end - 1),
            "rows": {"train": fold.validation_start, "validation": fold.cut - fold.validation_start, "test": stride},
            "windows": len(test_inputs),
            "train_windows": len(data.train[0]),
            "validation_windows": len(data.validation[0]),
            "calibration_windows": len(data.calibration[0]),
            "fitted_in_fold": fitted.fitted_in_fold + 1,
            "epochs_run": fitted.epochs_run,
            **({"refit": fitted.refit} if fitted.refit is not None else {}),
            "ridge_alphas": fitted.ridge.alphas,
            "refused_levels": fitted.intervals.get("refused", {}),
            **{
                name: evaluation.forecast_metrics(test_futures, forecast, last, scale, log_scale)
                for name, forecast in forecasts.items()
            },
            "coverage": conformal.coverage_of_bounds(test_futures, bounds),
        }
        reports.append(report)
        pooled["actual"].append(test_futures)
        pooled["last"].append(last)
        pooled_inputs.append(test_inputs)
        for name, forecast in forecasts.items():
            pooled.setdefault(name, []).append(forecast)
        for target, source in ((pooled_bounds, bounds), (baseline_bounds, empirical)):
            for key, (lower, upper) in source.items():
                target.setdefault(key, ([], []))
                target[key][0].append(lower)
                target[key][1].append(upper)
        if on_fold is not None:
            on_fold(fold.index + 1, len(plan), report)
    summary: dict[str, Any] = {}
    coverage: dict[str, Any] = {}
    evidence: dict[str, Any] = {}
    sharpness: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}
    if reports:
        arrays = {name: _pooled(parts) for name, parts in pooled.items()}
        actual, last = arrays["actual"], arrays["last"]
        # The pooled MASE is scaled by the last fold's training part (the longest history).
        summary = {name: evaluation.forecast_metrics(actual, arrays[name], last, scale, log_scale) for name in names}
        stacked = {key: (_pooled(lower), _pooled(upper)) for key, (lower, upper) in pooled_bounds.items()}
        coverage = conformal.coverage_of_bounds(actual, stacked)
        evidence = gate_evidence(
            arrays, stacked.get(GATE_LEVEL_KEY), spec.horizon, config.interval_band, GATE_LEVEL, significance_level
        )
        if "early_stopped" in arrays:
            evidence["refit_effect"] = _refit_effect(arrays, stacked.get(GATE_LEVEL_KEY), early_inside)
        for key, (lower, upper) in stacked.items():
            level = int(key) / 100
            base_lower, base_upper = (_pooled(part) for part in baseline_bounds[key])
            model_score = significance.winkler_score(actual, lower, upper, level)
            baseline_score = significance.winkler_score(actual, base_lower, base_upper, level)
            sharpness[key] = {
                "winkler_model": model_score,
                "winkler_empirical_baseline": baseline_score,
                "ratio_to_baseline": model_score / baseline_score if baseline_score > 0 else None,
                "baseline_coverage": float(np.mean((actual >= base_lower) & (actual <= base_upper))),
            }
    alternatives = {
        name: {"coverage_90": float(np.mean(np.concatenate(parts))) if parts else None, "folds": len(parts)}
        for name, parts in alternative.items()
    }
    report = {
        "folds": reports,
        "summary": summary,
        "coverage": coverage,
        "sharpness": sharpness,
        "evidence": evidence,
        "coverage_alternatives": {
            **alternatives,
            "note": "90 % coverage on the test windows of folds 2.. only: calibrated on the fold's own calibration "
            "block (disjoint_blocks, what is served) or on every earlier fold's out-of-sample residuals",
        },
        "protocol": {
            "kind": "walk-forward, expanding window",
            "folds": len(plan),
            "folds_run": len(reports),
            "stride": stride,
            "refit": config.backtest_refit,
            "procedure": PRODUCTION_PROCEDURE if config.production_refit else EARLY_STOPPED_PROCEDURE,
            "window": spec.window,
            "horizon": spec.horizon,
            "validation_share": round(validation_share, 6),
            "calibration": config.calibration,
            "calibration_share": config.calibration_share,
            "test_start": reports[0]["test_start"] if reports else None,
            "test_end": reports[-1]["test_end"] if reports else None,
            "test_windows": "every origin whose targets lie inside the fold's test segment; "
            "inputs may reach back into earlier rows",
            "intervals": conformal.METHOD_DESCRIPTIONS[config.interval_score]
            + (
                ", calibrated on each fold's calibration block (after its early-stopping block)"
                if config.calibration == "disjoint"
                else ", calibrated on the validation windows that chose the epoch (leaky)"
            ),
            "band": config.interval_band,
            "levels": [conformal.level_key(level) for level in config.interval_levels],
            "baselines": baseline_descriptions(spec),
            "mase_scale": "one-step naive MAE of the fold's training rows (pooled: the last fold's); mase_log: "
            "the same on log prices",
            "stopped": stopped,
            "seconds": round(time.perf_counter() - started, 3),
        },
    }
    return BacktestRun(report=report, forecasts=arrays)
