"""A served version's numpy steps around its network: raw windows to scaled inputs, outputs to prices and bounds.

The inference process runs both steps around the network for every batch
(`app/inference/engine.py` subclasses `ForecastSteps`), so the API process
sends raw windows and gets prices and bounds back. `interval_levels` is the
one rule for the order of the bounds, which the API's output names follow.
See docs/design.md, "Serving path".
"""

from __future__ import annotations

from typing import Any

import numpy as np

from training import conformal, features
from training.errors import BrokenVersionError
from training.features import Scaler, WindowSpec


def interval_levels(metadata: dict[str, Any]) -> tuple[str, ...]:
    """A version's interval level keys ("80", "90", ...), in the order `ForecastSteps.finish` stacks their bounds."""
    intervals = metadata.get("intervals") or None
    return tuple(intervals["half_widths"]) if intervals else ()


class ForecastSteps:
    """What a version does around its network, in numpy: raw windows to network inputs, outputs to prices.

    Both steps are pure and vectorised over the batch; the inference process
    runs them around the network (`CompiledModel` on TensorFlow, `OnnxModel`
    on ONNX Runtime), which a subclass supplies as `predict_scaled`.
    """

    def __init__(self, metadata: dict[str, Any], spec: WindowSpec, scaler: Scaler) -> None:
        self.metadata: dict[str, Any] = metadata
        self.name: str = str(metadata["name"])
        self.version: int = int(metadata["version"])
        self.spec: WindowSpec = spec
        self.scaler: Scaler = scaler
        self._intervals: dict[str, Any] | None = metadata.get("intervals") or None
        self.interval_levels: tuple[str, ...] = interval_levels(metadata)

    @property
    def window(self) -> int:
        """Rows per input window."""
        return self.spec.window

    @property
    def horizon(self) -> int:
        """Steps per forecast."""
        return self.spec.horizon

    def prepare(self, windows: np.ndarray) -> np.ndarray:
        """Raw windows (n, window, features), oldest row first, to the scaled float32 network input."""
        windows = np.asarray(windows, dtype=np.float64)
        expected = (self.spec.window, len(self.spec.features))
        if windows.ndim != 3 or windows.shape[1:] != expected:
            raise ValueError(
                f"expected windows of shape (n, {expected[0]}, {expected[1]}) "
                f"for features {list(self.spec.features)}, got {windows.shape}"
            )
        return features.scale_inputs(windows, self.spec, self.scaler)

    def finish(self, windows: np.ndarray, outputs: np.ndarray) -> np.ndarray:
        """Network outputs (n, horizon) for raw `windows` to forecasts and their interval bounds.

        Shaped (n, 1 + 2 * levels, horizon): row 0 of each window is the
        forecast, then the lower bound of each of `interval_levels`, then
        their upper bounds, all in price units.
        """
        windows = np.asarray(windows, dtype=np.float64)
        return self.with_bands(windows, features.outputs_to_prices(windows, outputs, self.spec, self.scaler))

    def with_bands(self, windows: np.ndarray, prices: np.ndarray) -> np.ndarray:
        """Forecasts (n, horizon) in price units for raw float64 `windows`, stacked with their bounds as `finish`."""
        if self._intervals is None:
            return prices[:, None, :]
        _, lower, upper = conformal.stacked_bounds_for(windows, prices, self._intervals, self.spec)
        return np.concatenate([prices[:, None, :], lower, upper], axis=1)

    # The largest batch the engine runs in one call; larger ones are cut into chunks of this size.
    max_batch_size: int

    def predict_scaled(self, scaled: np.ndarray) -> np.ndarray:
        """Network outputs (n, horizon) for already scaled float32 inputs (n, window, features)."""
        count = len(scaled)
        if count == 0:
            return np.empty((0, self.spec.horizon), dtype=np.float32)
        if count > self.max_batch_size:
            chunks = range(0, count, self.max_batch_size)
            return np.concatenate([self.run_batch(scaled[start : start + self.max_batch_size]) for start in chunks])
        return self.run_batch(scaled)

    def run_batch(self, scaled: np.ndarray) -> np.ndarray:
        """The network on 1 to `max_batch_size` scaled windows: the engine's part."""
        raise NotImplementedError

    def forecast(self, windows: np.ndarray) -> np.ndarray:
        """Forecasts and their interval bounds for raw windows (see `finish`), all in this process.

        What the inference process runs for each batch the API process sends.
        """
        return self.finish(windows, self.predict_scaled(self.prepare(windows)))

    def check_outputs(self, outputs: np.ndarray, size: int) -> np.ndarray:
        """A warm-up batch of `size` must give finite outputs of shape (size, horizon); else the version is broken."""
        if outputs.shape != (size, self.spec.horizon) or not np.all(np.isfinite(outputs)):
            raise BrokenVersionError(
                f"{self.name} v{self.version}: warm-up forecast has shape {outputs.shape} "
                f"or non-finite values; expected finite ({size}, {self.spec.horizon})"
            )
        return outputs

    def check_whole_path(self) -> None:
        """One forecast through the whole path, preprocessing included, must be finite.

        A flat window of ones is a valid input for every transform.
        """
        prices = self.forecast(np.ones((1, self.spec.window, len(self.spec.features))))
        if not np.all(np.isfinite(prices)):
            raise BrokenVersionError(f"{self.name} v{self.version}: warm-up forecast is not finite")
