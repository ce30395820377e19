"""The baselines every model is compared with: naive last value, drift and ridge.

Each turns raw windows into forecasts in price units shaped (windows,
horizon), so the test split, the walk-forward backtest and the benchmarks
score a network and its baselines on exactly the same windows. Naive and
drift need no fitting; the ridge is fitted on a fold's own training windows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from training import features
from training.features import WindowSpec

# Every baseline scored beside the model, in the order reports list them.
BASELINES: tuple[str, ...] = ("naive", "drift", "ridge")
# Baselines that need no fitting, scored on the test split as well as in the backtest.
UNFITTED_BASELINES: tuple[str, ...] = ("naive", "drift")
# Candidate ridge penalties, chosen per fold by efficient leave-one-out on
# the fold's own training windows (RidgeCV), one per horizon step.
RIDGE_ALPHAS: tuple[float, ...] = tuple(float(alpha) for alpha in np.logspace(-2, 4, 13))


def naive_forecast(last: np.ndarray, horizon: int) -> np.ndarray:
    """Every future step equals the last observed value."""
    return np.repeat(np.asarray(last, dtype=np.float64)[:, None], horizon, axis=1)


def drift_forecast(label_windows: np.ndarray, horizon: int) -> np.ndarray:
    """Extend the straight line from the window's first to last value."""
    first, last = label_windows[:, 0], label_windows[:, -1]
    slope = (last - first) / (label_windows.shape[1] - 1)
    steps = np.arange(1, horizon + 1, dtype=np.float64)
    return last[:, None] + slope[:, None] * steps[None, :]


def unfitted_forecasts(label_windows: np.ndarray, horizon: int) -> dict[str, np.ndarray]:
    """Naive and drift forecasts of the label's windows (n, window), in price units."""
    return {
        "naive": naive_forecast(label_windows[:, -1], horizon),
        "drift": drift_forecast(label_windows, horizon),
    }


def lagged_returns(inputs: np.ndarray, spec: WindowSpec) -> np.ndarray:
    """The label's daily log returns inside each raw window, newest last: (n, window - 1)."""
    label = np.asarray(inputs, dtype=np.float64)[:, :, spec.label_index]
    return np.diff(np.log(label), axis=1)


@dataclass
class RidgeBaseline:
    """Ridge regression of each step's log return on the window's lagged log returns."""

    model: Any
    spec: WindowSpec

    @classmethod
    def fit(cls, inputs: np.ndarray, futures: np.ndarray, spec: WindowSpec) -> RidgeBaseline:
        """Fit on raw training windows; the target for step k is log(label[t+k] / label[t])."""
        from sklearn.linear_model import RidgeCV
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        targets = np.log(np.asarray(futures, dtype=np.float64) / features.reference_values(inputs, spec)[:, None])
        model = make_pipeline(StandardScaler(), RidgeCV(alphas=RIDGE_ALPHAS, alpha_per_target=True))
        model.fit(lagged_returns(inputs, spec), targets)
        return cls(model=model, spec=spec)

    def predict(self, inputs: np.ndarray) -> np.ndarray:
        """Forecasts in price units (n, horizon) for raw windows."""
        if len(inputs) == 0:
            return np.empty((0, self.spec.horizon))
        log_returns = np.asarray(self.model.predict(lagged_returns(inputs, self.spec))).reshape(len(inputs), -1)
        return features.reference_values(inputs, self.spec)[:, None] * np.exp(log_returns)

    @property
    def alphas(self) -> list[float]:
        """The penalty chosen for each horizon step."""
        return np.atleast_1d(self.model[-1].alpha_).astype(float).tolist()


def descriptions(spec: WindowSpec) -> dict[str, str]:
    """What each baseline is, in words, for a report's protocol section."""
    return {
        "naive": "last observed value",
        "drift": "straight line from the window's first to last value",
        "ridge": f"RidgeCV on the {spec.window - 1} lagged daily log returns of '{spec.label}', "
        "one output per step, fitted on every row before the cut",
    }
