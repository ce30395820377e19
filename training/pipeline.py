"""From a clean price frame to a stored, evaluated model version.

The steps are the seed's worked example done without look-ahead: split the
rows chronologically, window each part on its own, fit the scaler on the
training windows, train with early stopping on the validation windows, score
the untouched test windows in price units beside the naive and drift
baselines, calibrate intervals on the validation windows, then write the
version atomically.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from training import conformal, evaluation, features
from training.config import DEFAULT_INTERVAL_SCORE, TrainConfig
from training.data import DATE_COLUMN, CleanResult
from training.errors import ConfigError
from training.features import Scaler, SplitBounds, WindowSpec
from training.files import check_name, now_iso

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


def _date(frame: pd.DataFrame, row: int) -> str:
    return str(frame[DATE_COLUMN].iloc[row].strftime("%Y-%m-%d"))


def prepare(frame: pd.DataFrame, spec: WindowSpec, validation_fraction: float, test_fraction: float) -> PreparedData:
    """Split chronologically, window each part separately, fit the scaler on train only."""
    missing = [column for column in spec.features if column not in frame.columns]
    if missing:
        raise ConfigError(f"feature column(s) {missing} are not in the data; it has {list(frame.columns)}")
    values = frame[list(spec.features)].to_numpy(dtype=np.float64)
    bounds = features.chronological_split(len(values), spec, validation_fraction, test_fraction)
    slices = {
        "train": slice(0, bounds.train_end),
        "validation": slice(bounds.train_end, bounds.validation_end),
        "test": slice(bounds.validation_end, bounds.rows),
    }
    # Windowing each part on its own means no window straddles a boundary.
    parts = {part: features.make_windows(values[rows], spec) for part, rows in slices.items()}
    scaler = features.fit_scaler(*parts["train"], spec)
    dates = {
        part: {"start": _date(frame, rows.start), "end": _date(frame, rows.stop - 1), "rows": rows.stop - rows.start}
        for part, rows in slices.items()
    }
    return PreparedData(spec=spec, bounds=bounds, scaler=scaler, parts=parts, dates=dates)  # type: ignore[arg-type]


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


def fit_network(
    config: TrainConfig,
    prepared: PreparedData,
    on_epoch: EpochCallback | None = None,
    should_stop: StopCheck | None = None,
) -> tuple[Any, int]:
    """Build and train the network; returns the model (best weights) and epochs run."""
    import keras

    from training.models import build_model

    spec, scaler = prepared.spec, prepared.scaler
    train_inputs, train_futures = prepared.parts["train"]
    validation_inputs, validation_futures = prepared.parts["validation"]
    train_x = features.scale_inputs(train_inputs, spec, scaler)
    train_y = features.scale_targets(train_inputs, train_futures, spec, scaler)
    if config.shuffle_labels:
        train_y = np.random.default_rng(config.seed).permutation(train_y)
    validation_x = features.scale_inputs(validation_inputs, spec, scaler)
    validation_y = features.scale_targets(validation_inputs, validation_futures, spec, scaler)
    model = build_model(
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
    return model, len(history.history.get("loss", []))


def predict_prices(model: Any, inputs: np.ndarray, spec: WindowSpec, scaler: Scaler) -> np.ndarray:
    """Forecasts in price units for raw windows (training-time helper, batched)."""
    if len(inputs) == 0:
        return np.empty((0, spec.horizon))
    from training.models import predict_outputs

    outputs = predict_outputs(model, features.scale_inputs(inputs, spec, scaler))
    return features.outputs_to_prices(inputs, outputs, spec, scaler)


def evaluate_fitted(
    model: Any, prepared: PreparedData, levels: tuple[float, ...], score: str = DEFAULT_INTERVAL_SCORE
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Test metrics beside baselines, and intervals calibrated on validation windows."""
    spec, scaler = prepared.spec, prepared.scaler
    validation_inputs, validation_futures = prepared.parts["validation"]
    test_inputs, test_futures = prepared.parts["test"]
    test_forecast = predict_prices(model, test_inputs, spec, scaler)
    metrics = evaluation.compare_with_baselines(test_futures, test_forecast, test_inputs[:, :, spec.label_index])
    validation_forecast = predict_prices(model, validation_inputs, spec, scaler)
    intervals = conformal.calibrate_intervals(
        validation_inputs, validation_futures, validation_forecast, spec, levels, score=score
    )
    intervals["method"] += " on validation windows"
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
) -> dict[str, Any]:
    """Everything a server needs to serve a version, and a person to trust it."""
    frame = clean.frame
    return {
        "architecture": config.architecture,
        "hyperparameters": config.hyperparameters(),
        "features": list(prepared.spec.features),
        "label": prepared.spec.label,
        "window": prepared.spec.window,
        "horizon": prepared.spec.horizon,
        "transform": prepared.spec.transform,
        "scaler": prepared.scaler.to_json(),
        "data": {
            **source,
            "start": _date(frame, 0),
            "end": _date(frame, len(frame) - 1),
            "rows": len(frame),
            "rows_read": clean.rows_read,
            "rows_dropped": clean.dropped,
            "outliers": len(clean.outliers),
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

    name, clean, config = check_name(run.name), run.clean, run.config
    started = time.perf_counter()
    prepared = prepare(clean.frame, config.window_spec(), config.validation_fraction, config.test_fraction)
    model, epochs_run = fit_network(config, prepared, on_epoch=progress.on_epoch, should_stop=progress.should_stop)
    metrics, intervals = evaluate_fitted(model, prepared, config.interval_levels, config.interval_score)
    seconds = time.perf_counter() - started
    metadata = build_metadata(config, prepared, clean, run.source, metrics, intervals, seconds, epochs_run)
    metadata["created_at"] = now_iso()
    if after_fit is not None:
        metadata = after_fit(metadata)

    def write_files(folder: Path) -> None:
        model.save(folder / MODEL_FILE)

    version = store.save_version(name, write_files, metadata)
    return TrainOutcome(
        version=version, metadata=store.read_metadata(name, version), epochs_run=epochs_run, seconds=seconds
    )
