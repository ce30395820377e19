"""Training one version: from a clean price frame to a stored, evaluated model version.

`train_version` splits the rows chronologically, windows each part on its
own, fits the scaler on the training windows, trains with early stopping on
the first validation block, calibrates intervals on a later disjoint block,
scores the test windows in price units beside the baselines, then writes
the version atomically. The network served is a production refit on every
row for the epochs early stopping chose; its figures stay the evaluated
run's, out of sample. Backtest and promotion are `training.promotion`'s.
See docs/design.md, "Data path" and "Production refit".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from training import baselines, conformal, evaluation, features, onnx_export
from training.config import DEFAULT_BAND, DEFAULT_INTERVAL_SCORE, TrainConfig
from training.data import CleanResult, fit_calendar, outlier_flags
from training.errors import ConfigError
from training.features import Scaler, SplitBounds
from training.files import check_name, now_iso
from training.spec import DATE_COLUMN, OUTLIER_COLUMN, WindowSpec

# How masking works, as the metadata says it.
OUTLIER_MASKING = (
    "one-day log returns of the label beyond the robust rule fitted on each fit's own training rows "
    "(the split's, each fold's, the refit's): their windows are left out of training and early stopping, "
    "kept in calibration and scoring"
)
# on_epoch(epoch, epochs, logs) after each epoch.
EpochCallback = Callable[[int, int, dict[str, float]], None]
# on_fold(done, total, fold_report) after each walk-forward fold.
FoldCallback = Callable[[int, int, dict[str, Any]], None]
# should_stop() between steps: true ends the run early (a cancelled job).
StopCheck = Callable[[], bool]


@dataclass(frozen=True)
class TrainingRun:
    """What one run trains: the model's name, the clean prices and where they came from, and the configuration."""

    name: str
    clean: CleanResult
    source: dict[str, Any]
    config: TrainConfig


@dataclass(frozen=True)
class Progress:
    """What a run reports to and asks between its steps; every hook is optional."""

    on_epoch: EpochCallback | None = None
    on_fold: FoldCallback | None = None
    should_stop: StopCheck | None = None


@dataclass
class PreparedData:
    """Raw windows of each part, the scaler fitted on train, and the split."""

    spec: WindowSpec
    bounds: SplitBounds
    scaler: Scaler
    parts: dict[str, tuple[np.ndarray, np.ndarray]]
    dates: dict[str, dict[str, str]]
    label: np.ndarray = field(default_factory=lambda: np.empty(0))
    """The label of every row, masked ones included: histories come from the rows, not from windows."""


def _date(frame: pd.DataFrame, row: int) -> str:
    return str(frame[DATE_COLUMN].iloc[row].strftime("%Y-%m-%d"))


def prepare(
    frame: pd.DataFrame,
    spec: WindowSpec,
    validation_fraction: float,
    test_fraction: float,
    calibration_share: float = 0.5,
    calibration: str = "disjoint",
) -> PreparedData:
    """Split chronologically, window each part separately, fit the scaler on train only.

    With `calibration="disjoint"` the validation part becomes two blocks:
    "validation" (early stopping) and "calibration" (conformal widths),
    `horizon - 1` rows apart so that no target is in both. With "shared"
    (the leaky variant, for comparison only) both are the whole validation part.
    """
    missing = [column for column in spec.features if column not in frame.columns]
    if missing:
        raise ConfigError(f"feature column(s) {missing} are not in the data; it has {list(frame.columns)}")
    values = frame[list(spec.features)].to_numpy(dtype=np.float64)
    bounds = features.chronological_split(len(values), spec, validation_fraction, test_fraction)
    # Masking leaves outliers out of fitting (training, early stopping), never out of scoring: the
    # calibration and test windows keep them, they are the tails a band must cover.
    masked = outlier_mask(frame, spec, bounds.train_end)
    slices = {
        "train": slice(0, bounds.train_end),
        "validation": slice(bounds.train_end, bounds.validation_end),
        "test": slice(bounds.validation_end, bounds.rows),
    }
    # Windowing each part on its own means no window straddles a boundary.
    parts = {
        part: features.make_windows(values[rows], spec, None if masked is None or part == "test" else masked[rows])
        for part, rows in slices.items()
    }
    if calibration == "disjoint":
        blocks = features.tail_blocks(bounds.train_end, bounds.validation_end, spec, calibration_share)
        early = slice(blocks.start, blocks.early_stopping_stop)
        parts["validation"] = features.make_windows(values[early], spec, None if masked is None else masked[early])
        parts["calibration"] = features.windows_with_targets_in(values, spec, blocks.calibration_start, blocks.stop)
        slices["calibration"] = slice(blocks.calibration_start, blocks.stop)
        slices["validation"] = slice(blocks.start, blocks.early_stopping_stop)
    else:
        parts["calibration"] = parts["validation"]
        slices["calibration"] = slices["validation"]
    scaler = features.fit_scaler(*parts["train"], spec)
    dates = {
        part: {"start": _date(frame, rows.start), "end": _date(frame, rows.stop - 1), "rows": rows.stop - rows.start}
        for part, rows in slices.items()
    }
    return PreparedData(
        spec=spec,
        bounds=bounds,
        scaler=scaler,
        parts=parts,
        dates=dates,  # type: ignore[arg-type]
        label=values[:, spec.label_index],
    )


def outlier_mask(frame: pd.DataFrame, spec: WindowSpec, fit_rows: int) -> np.ndarray | None:
    """The label's outlier rows by the rule fitted on the first `fit_rows` rows; None when masking is off.

    The cleaner's `outlier` column says masking is on (and lists the close's
    outliers for the report); each fit refits the rule on its own training
    rows and the label it learns, so no later row moves its threshold.
    """
    if OUTLIER_COLUMN not in frame.columns:
        return None
    return outlier_flags(frame[spec.label].to_numpy(dtype=np.float64), fit_rows)


class _EpochReporter:
    """Keras callback factory kept lazy so that importing this module stays cheap."""

    @staticmethod
    def create(epochs: int, on_epoch: EpochCallback | None, should_stop: StopCheck | None) -> Any:
        import keras

        class Reporter(keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
                if on_epoch is not None:
                    on_epoch(epoch + 1, epochs, {key: float(value) for key, value in (logs or {}).items()})
                if should_stop is not None and should_stop():
                    self.model.stop_training = True

        return Reporter()


class Fit(NamedTuple):
    """A trained network, the epochs it ran and the epoch whose weights it kept."""

    model: Any
    epochs_run: int
    best_epoch: int


def _build(config: TrainConfig, spec: WindowSpec) -> Any:
    from training.models import build_model

    return build_model(
        config.architecture,
        window=spec.window,
        feature_count=len(spec.features),
        horizon=spec.horizon,
        units=config.units,
        layer_count=config.layers,
        dropout=config.dropout,
        learning_rate=config.learning_rate,
        seed=config.seed,
    )


def _training_targets(
    config: TrainConfig, inputs: np.ndarray, futures: np.ndarray, spec: WindowSpec, scaler: Scaler
) -> np.ndarray:
    targets = features.scale_targets(inputs, futures, spec, scaler)
    if config.shuffle_labels:
        targets = np.random.default_rng(config.seed).permutation(targets)
    return targets


def fit_network(
    config: TrainConfig,
    prepared: PreparedData,
    on_epoch: EpochCallback | None = None,
    should_stop: StopCheck | None = None,
) -> Fit:
    """Build and train the network with early stopping; the model keeps its best epoch's weights."""
    import keras

    spec, scaler = prepared.spec, prepared.scaler
    train_inputs, train_futures = prepared.parts["train"]
    validation_inputs, validation_futures = prepared.parts["validation"]
    train_x = features.scale_inputs(train_inputs, spec, scaler)
    train_y = _training_targets(config, train_inputs, train_futures, spec, scaler)
    validation_x = features.scale_inputs(validation_inputs, spec, scaler)
    validation_y = features.scale_targets(validation_inputs, validation_futures, spec, scaler)
    model = _build(config, spec)
    callbacks = [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience, restore_best_weights=True),
        _EpochReporter.create(config.epochs, on_epoch, should_stop),
    ]
    history = model.fit(
        train_x,
        train_y,
        validation_data=(validation_x, validation_y),
        epochs=config.epochs,
        batch_size=config.batch_size,
        shuffle=True,
        callbacks=callbacks,
        verbose=0,
    )
    losses = history.history.get("val_loss", [])
    best_epoch = int(np.argmin(losses)) + 1 if losses else len(history.history.get("loss", []))
    return Fit(model, len(history.history.get("loss", [])), best_epoch)


def refit_on_all_rows(
    config: TrainConfig,
    frame: pd.DataFrame,
    epochs: int,
    on_epoch: EpochCallback | None = None,
    should_stop: StopCheck | None = None,
) -> tuple[Any, Scaler, int]:
    """The production refit: every window of every row, the scaler refitted on them, a fixed epoch count.

    Nothing is held out, so there is no early stopping: `epochs` is the
    best epoch of the evaluated run. Returns the model, its scaler and the
    number of windows it saw.
    """
    spec = config.window_spec()
    values = frame[list(spec.features)].to_numpy(dtype=np.float64)
    inputs, futures = features.make_windows(values, spec, outlier_mask(frame, spec, len(frame)))
    scaler = features.fit_scaler(inputs, futures, spec)
    model = _build(config, spec)
    model.fit(
        features.scale_inputs(inputs, spec, scaler),
        _training_targets(config, inputs, futures, spec, scaler),
        epochs=max(epochs, 1),
        batch_size=config.batch_size,
        shuffle=True,
        callbacks=[_EpochReporter.create(max(epochs, 1), on_epoch, should_stop)],
        verbose=0,
    )
    return model, scaler, len(inputs)


def predict_prices(model: Any, inputs: np.ndarray, spec: WindowSpec, scaler: Scaler) -> np.ndarray:
    """Forecasts in price units for raw windows (training-time helper, batched)."""
    if len(inputs) == 0:
        return np.empty((0, spec.horizon))
    from training.models import predict_outputs

    outputs = predict_outputs(model, features.scale_inputs(inputs, spec, scaler))
    return features.outputs_to_prices(inputs, outputs, spec, scaler)


def evaluate_fitted(
    model: Any,
    prepared: PreparedData,
    levels: tuple[float, ...],
    score: str = DEFAULT_INTERVAL_SCORE,
    band: str = DEFAULT_BAND,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Test metrics beside baselines, and intervals calibrated on the calibration block."""
    spec, scaler = prepared.spec, prepared.scaler
    calibration_inputs, calibration_futures = prepared.parts["calibration"]
    test_inputs, test_futures = prepared.parts["test"]
    # The MASE scales from the training rows, the drift from every row before the test part.
    training_rows, past_rows = (
        prepared.label[: prepared.bounds.train_end],
        prepared.label[: prepared.bounds.validation_end],
    )
    test_forecast = predict_prices(model, test_inputs, spec, scaler)
    label_windows = test_inputs[:, :, spec.label_index]
    metrics = evaluation.compare_with_baselines(test_futures, test_forecast, label_windows, training_rows, past_rows)
    calibration_forecast = predict_prices(model, calibration_inputs, spec, scaler)
    intervals = conformal.calibrate_intervals(
        calibration_inputs, calibration_futures, calibration_forecast, spec, levels, score=score, band=band
    )
    shared = prepared.parts["calibration"] is prepared.parts["validation"]
    intervals["method"] += (
        " on the validation windows that also chose the early-stopping epoch (leaky)"
        if shared
        else " on the calibration block (after the early-stopping block, horizon - 1 rows apart)"
    )
    # The naive forecast's own bands, calibrated on the same block: what an
    # unpinned request for an unpromoted model gets when the service is set
    # to answer with naive (app setting unpromoted_default="naive").
    naive = baselines.naive_forecast(calibration_inputs[:, -1, spec.label_index], spec.horizon)
    naive_intervals = conformal.calibrate_intervals(
        calibration_inputs, calibration_futures, naive, spec, levels, score=score, band=band
    )
    intervals["naive"] = {key: naive_intervals[key] for key in ("half_widths", "refused")}
    # bounds_for is the function serving uses, so the coverage reported here
    # is the coverage of the intervals a client will receive.
    intervals["test_coverage"] = conformal.coverage_for(test_inputs, test_futures, test_forecast, intervals, spec)
    return metrics, intervals


@dataclass
class TrainOutcome:
    """What a finished training run produced."""

    version: int
    metadata: dict[str, Any]
    epochs_run: int
    seconds: float
    extras: dict[str, Any] = field(default_factory=dict)


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape a model's numbers."""
    import keras
    import sklearn
    import tensorflow as tf

    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "scikit-learn": sklearn.__version__,
    }


def build_metadata(
    config: TrainConfig,
    prepared: PreparedData,
    clean: CleanResult,
    source: dict[str, Any],
    metrics: dict[str, Any],
    intervals: dict[str, Any],
    seconds: float,
    epochs_run: int,
    refit: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything a server needs to serve a version, and a person to trust it.

    With a production `refit`, "scaler" is the refit network's and
    "trained_through" the last row's date; "metrics", "intervals" and the
    backtest stay the evaluated run's (out of sample).
    """
    frame = clean.frame
    evaluated_through = prepared.dates["train"]["end"]
    return {
        "architecture": config.architecture,
        "hyperparameters": config.hyperparameters(),
        "features": list(prepared.spec.features),
        "label": prepared.spec.label,
        "window": prepared.spec.window,
        "horizon": prepared.spec.horizon,
        "transform": prepared.spec.transform,
        "scaler": refit["scaler"] if refit else prepared.scaler.to_json(),
        "calendar": config.calendar,
        "trained_through": refit["trained_through"] if refit else evaluated_through,
        "refit": {key: value for key, value in refit.items() if key != "scaler"}
        if refit
        else {"kind": "none: the served network is the evaluated one", "trained_through": evaluated_through},
        "data": {
            **source,
            "start": _date(frame, 0),
            "end": _date(frame, len(frame) - 1),
            "rows": len(frame),
            "rows_read": clean.rows_read,
            "rows_dropped": clean.dropped,
            "outliers": len(clean.outliers),
            "outliers_masked": bool(OUTLIER_COLUMN in frame.columns),
            "outlier_masking": OUTLIER_MASKING if OUTLIER_COLUMN in frame.columns else None,
            "outlier_rule": clean.outlier_rule,
            "calendar_fit": clean.calendar_fit,
            "last_close": float(frame["close"].iloc[-1]) if "close" in frame.columns else None,
        },
        "split": {
            **prepared.dates,
            "windows": {part: len(inputs) for part, (inputs, _) in prepared.parts.items()},
        },
        "metrics": metrics,
        "intervals": intervals,
        "epochs_run": epochs_run,
        "training_seconds": round(seconds, 3),
        "libraries": library_versions(),
    }


def train_version(
    run: TrainingRun,
    store: Any,
    progress: Progress = Progress(),
    after_fit: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> TrainOutcome:
    """Train, evaluate and store one version; returns its number and metadata.

    `after_fit(metadata)` may add to the metadata before it is written (the
    walk-forward backtest does), so a version is stored whole or not at all.
    """
    from training.store import MODEL_FILE

    name, config = check_name(run.name), run.config
    clean = fit_calendar(run.clean, config.calendar)
    started = time.perf_counter()
    prepared = prepare(
        clean.frame,
        config.window_spec(),
        config.validation_fraction,
        config.test_fraction,
        calibration_share=config.calibration_share,
        calibration=config.calibration,
    )
    fit = fit_network(config, prepared, on_epoch=progress.on_epoch, should_stop=progress.should_stop)
    metrics, intervals = evaluate_fitted(
        fit.model, prepared, config.interval_levels, config.interval_score, config.interval_band
    )
    model, epochs_run, refit, served_scaler = fit.model, fit.epochs_run, None, prepared.scaler
    if config.production_refit:
        model, scaler, windows = refit_on_all_rows(
            config, clean.frame, fit.best_epoch, on_epoch=progress.on_epoch, should_stop=progress.should_stop
        )
        refit = {
            "kind": "production refit on every row; scaler refitted on the same rows",
            "epochs": max(fit.best_epoch, 1),
            "epochs_from": "best epoch of the evaluated run's early stopping",
            "windows": windows,
            "trained_through": _date(clean.frame, len(clean.frame) - 1),
            "evaluated_trained_through": prepared.dates["train"]["end"],
            "evaluated_scaler": prepared.scaler.to_json(),
            "intervals": "half-widths from the evaluated run's calibration block, carried over: those windows were "
            "held out from the evaluated network, not from this refit; the backtest scores this procedure",
            "figures": "metrics and intervals: the evaluated (early-stopped) network's, on the test split; "
            "backtest: this refit procedure, run in every fold and scored",
            "scaler": scaler.to_json(),
        }
        served_scaler = scaler
    seconds = time.perf_counter() - started
    metadata = build_metadata(config, prepared, clean, run.source, metrics, intervals, seconds, epochs_run, refit)
    metadata["created_at"] = now_iso()
    if after_fit is not None:
        metadata = after_fit(metadata)

    # The export is checked on the windows the evaluation used, scaled as the served network sees them.
    check_windows = np.concatenate([prepared.parts[part][0] for part in ("calibration", "test")])
    spec = prepared.spec

    def write_files(folder: Path) -> None:
        model.save(folder / MODEL_FILE)
        # Written here so that the file's sha256 joins the version's hashed files.
        metadata["onnx"] = onnx_export.export_checked(
            model, folder, features.scale_inputs(check_windows, spec, served_scaler), spec.window, len(spec.features)
        )

    version = store.save_version(name, write_files, metadata)
    return TrainOutcome(
        version=version, metadata=store.read_metadata(name, version), epochs_run=epochs_run, seconds=seconds
    )
