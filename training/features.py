"""The one preprocessing module shared by training and serving.

Everything here is a pure function of arrays: windows are cut, encoded into a
scale-free representation, and standardised with a scaler fitted on the
training windows only. Serving imports the same functions, so a served
version can never window or scale differently from how it was trained.
What a window is (`WindowSpec`) is defined in `training.spec`. See
docs/design.md, "Scale-free representation (why)".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from training.errors import ConfigError
from training.spec import WindowSpec

# Standard deviations below this are treated as 1 so that a constant feature
# (a volume column of zeros, say) does not divide by zero.
MIN_SCALE = 1e-8


@dataclass(frozen=True)
class Scaler:
    """Fitted centre and scale for inputs (per feature) and targets (per step)."""

    kind: Literal["standard", "minmax"]
    feature_center: np.ndarray
    feature_scale: np.ndarray
    target_center: np.ndarray
    target_scale: np.ndarray

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form stored in metadata.json (never pickled)."""
        return {
            "kind": self.kind,
            "feature_center": self.feature_center.tolist(),
            "feature_scale": self.feature_scale.tolist(),
            "target_center": self.target_center.tolist(),
            "target_scale": self.target_scale.tolist(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Scaler:
        """Rebuild a scaler from metadata, checking that every number is finite."""
        try:
            arrays = {
                key: np.asarray(data[key], dtype=np.float64)
                for key in ("feature_center", "feature_scale", "target_center", "target_scale")
            }
            kind = data["kind"]
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"scaler metadata is incomplete or not numeric: {error}") from error
        if kind not in ("standard", "minmax"):
            raise ValueError(f"unknown scaler kind '{kind}'")
        for key, values in arrays.items():
            if values.ndim != 1 or not np.all(np.isfinite(values)):
                raise ValueError(f"scaler field '{key}' must be a list of finite numbers")
        if np.any(arrays["feature_scale"] <= 0) or np.any(arrays["target_scale"] <= 0):
            raise ValueError("scaler scales must be positive")
        return cls(kind=kind, **arrays)


def make_windows(
    values: np.ndarray, spec: WindowSpec, masked: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Cut rows (time, features) into inputs (n, window, features) and futures (n, horizon).

    Window i covers rows i .. i+window-1; its future is the label on the next
    `horizon` rows. Returns views where possible, so this is cheap. `masked`
    (one bool per row) leaves out every window whose inputs or targets touch
    a masked row (an outlier): the row stays in the series, unused.
    """
    rows = values.shape[0]
    count = rows - spec.window - spec.horizon + 1
    features = values.shape[1]
    if count <= 0:
        return np.empty((0, spec.window, features)), np.empty((0, spec.horizon))
    inputs = np.lib.stride_tricks.sliding_window_view(values[: rows - spec.horizon], spec.window, axis=0)
    inputs = np.moveaxis(inputs, -1, 1)
    label = values[spec.window :, spec.label_index]
    futures = np.lib.stride_tricks.sliding_window_view(label, spec.horizon)[:count]
    if masked is not None and np.any(masked):
        touched = np.concatenate([[0], np.cumsum(np.asarray(masked, dtype=np.int64))])
        span = spec.window + spec.horizon
        keep = touched[span : span + count] - touched[:count] == 0
        return inputs[:count][keep], futures[keep]
    return inputs[:count], futures


def reference_values(inputs: np.ndarray, spec: WindowSpec) -> np.ndarray:
    """The label's last value in each window: the anchor of the forecast."""
    return inputs[:, -1, spec.label_index]


def encode_inputs(inputs: np.ndarray, spec: WindowSpec) -> np.ndarray:
    """Raw windows to the transform's representation, before scaling."""
    if spec.transform == "minmax":
        return inputs.astype(np.float64)
    reference = reference_values(inputs, spec)[:, None]
    encoded = np.empty(inputs.shape, dtype=np.float64)
    prices = np.array(spec.price_columns)
    encoded[:, :, prices] = np.log(inputs[:, :, prices] / reference[:, :, None])
    if not prices.all():
        encoded[:, :, ~prices] = _demeaned_log_volume(inputs[:, :, ~prices])
    return encoded


def _demeaned_log_volume(values: np.ndarray) -> np.ndarray:
    """log1p of each non-price column minus its mean over the window, a zero counted as missing.

    A zero volume (a halted session) would be log1p(0) = 0, about 16 below
    a traded day's log volume: a spike that says nothing about the price
    and inflates the feature's training deviation. A zero is left out of
    the window's mean and encodes as 0, the window's typical volume.
    """
    present = values > 0
    logs = np.log1p(np.where(present, values, 0.0))
    counts = present.sum(axis=1, keepdims=True)
    means = logs.sum(axis=1, keepdims=True) / np.maximum(counts, 1)
    return np.where(present, logs - means, 0.0)


def encode_targets(inputs: np.ndarray, futures: np.ndarray, spec: WindowSpec) -> np.ndarray:
    """Future label values to the transform's target, before scaling."""
    if spec.transform == "minmax":
        return futures.astype(np.float64)
    return np.log(futures / reference_values(inputs, spec)[:, None])


def fit_scaler(train_inputs: np.ndarray, train_futures: np.ndarray, spec: WindowSpec) -> Scaler:
    """Fit on the training windows only; nothing after the split may reach here."""
    if len(train_inputs) == 0:
        raise ConfigError("no training windows to fit the scaler on")
    encoded = encode_inputs(train_inputs, spec).reshape(-1, len(spec.features))
    targets = encode_targets(train_inputs, train_futures, spec)
    if spec.transform == "minmax":
        low, high = encoded.min(axis=0), encoded.max(axis=0)
        label_low = min(low[spec.label_index], float(targets.min()))
        label_high = max(high[spec.label_index], float(targets.max()))
        return Scaler(
            kind="minmax",
            feature_center=low,
            feature_scale=np.maximum(high - low, MIN_SCALE),
            target_center=np.full(spec.horizon, label_low),
            target_scale=np.full(spec.horizon, max(label_high - label_low, MIN_SCALE)),
        )
    feature_scale = encoded.std(axis=0)
    target_scale = targets.std(axis=0)
    return Scaler(
        kind="standard",
        feature_center=encoded.mean(axis=0),
        feature_scale=np.where(feature_scale < MIN_SCALE, 1.0, feature_scale),
        target_center=targets.mean(axis=0),
        target_scale=np.where(target_scale < MIN_SCALE, 1.0, target_scale),
    )


def scale_inputs(inputs: np.ndarray, spec: WindowSpec, scaler: Scaler) -> np.ndarray:
    """Raw windows to the float32 network input (batch, time steps, features)."""
    encoded = encode_inputs(inputs, spec)
    return ((encoded - scaler.feature_center) / scaler.feature_scale).astype(np.float32)


def scale_targets(inputs: np.ndarray, futures: np.ndarray, spec: WindowSpec, scaler: Scaler) -> np.ndarray:
    """Future label values to the float32 network target (batch, horizon)."""
    targets = encode_targets(inputs, futures, spec)
    return ((targets - scaler.target_center) / scaler.target_scale).astype(np.float32)


def outputs_to_prices(inputs: np.ndarray, outputs: np.ndarray, spec: WindowSpec, scaler: Scaler) -> np.ndarray:
    """Network outputs (batch, horizon) back to price units."""
    targets = np.asarray(outputs, dtype=np.float64) * scaler.target_scale + scaler.target_center
    if spec.transform == "minmax":
        return targets
    return reference_values(inputs, spec)[:, None] * np.exp(targets)


@dataclass(frozen=True)
class SplitBounds:
    """Row indices where the validation and test parts start."""

    train_end: int
    validation_end: int
    rows: int


def chronological_split(rows: int, spec: WindowSpec, validation_fraction: float, test_fraction: float) -> SplitBounds:
    """Split rows oldest-first into train / validation / test, checking each can hold windows."""
    if not 0 < validation_fraction < 1 or not 0 < test_fraction < 1:
        raise ConfigError("validation_fraction and test_fraction must be between 0 and 1")
    train_fraction = 1 - validation_fraction - test_fraction
    if train_fraction <= 0:
        raise ConfigError("validation_fraction + test_fraction must leave rows for training")
    # Each part must hold at least this many windows to be worth scoring.
    min_windows = 10
    per_part = spec.window + spec.horizon + min_windows - 1
    needed = max(math.ceil(per_part / fraction) for fraction in (train_fraction, validation_fraction, test_fraction))
    if rows < needed:
        raise ConfigError(
            f"not enough rows: need at least {needed} clean rows for window {spec.window}, "
            f"horizon {spec.horizon} and a {train_fraction:.0%}/{validation_fraction:.0%}/"
            f"{test_fraction:.0%} split, got {rows}"
        )
    train_end = round(rows * train_fraction)
    validation_end = round(rows * (train_fraction + validation_fraction))
    return SplitBounds(train_end=train_end, validation_end=validation_end, rows=rows)


@dataclass(frozen=True)
class TailBlocks:
    """Where the early-stopping block's targets end and the calibration block's begin (row indices).

    Early-stopping targets lie in [start, early_stopping_stop), calibration
    targets in [calibration_start, stop); the `horizon - 1` rows between them
    keep every target of one block out of the other, and the early-stopping
    epoch is chosen on windows the intervals are never calibrated on.
    """

    start: int
    early_stopping_stop: int
    calibration_start: int
    stop: int


def tail_blocks(start: int, stop: int, spec: WindowSpec, calibration_share: float, min_windows: int = 10) -> TailBlocks:
    """Split the held-out tail [start, stop) into an early-stopping block, a gap and a calibration block."""
    if not 0 < calibration_share < 1:
        raise ConfigError(f"calibration_share must be between 0 and 1, got {calibration_share}")
    rows = stop - start
    calibration_rows = round(rows * calibration_share)
    calibration_start = stop - calibration_rows
    early_stopping_stop = calibration_start - (spec.horizon - 1)
    # Early-stopping windows keep their inputs inside the block (as the
    # validation part always did); calibration windows may read earlier rows
    # as their past, so only their targets must fit.
    early_windows = early_stopping_stop - start - spec.window - spec.horizon + 1
    calibration_windows = calibration_rows - spec.horizon + 1
    if early_windows < min_windows or calibration_windows < min_windows:
        raise ConfigError(
            f"the held-out tail of {rows} rows is too short for an early-stopping block and a calibration "
            f"block (got {max(early_windows, 0)} and {max(calibration_windows, 0)} windows, need {min_windows} "
            f"each with window {spec.window} and horizon {spec.horizon}); use more rows or a larger validation_fraction"
        )
    return TailBlocks(start, early_stopping_stop, calibration_start, stop)


def windows_with_targets_in(
    values: np.ndarray, spec: WindowSpec, first_target: int, stop: int, masked: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Windows whose every future row lies in [first_target, stop); inputs reach back before first_target."""
    rows = slice(max(first_target - spec.window, 0), stop)
    return make_windows(values[rows], spec, None if masked is None else masked[rows])
