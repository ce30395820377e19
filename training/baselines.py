"""The baselines every model is compared with: naive last value, drift and ridge.

Each turns raw windows into forecasts in price units shaped (windows,
horizon), so the test split, the walk-forward backtest and the benchmarks
score a network and its baselines on exactly the same windows. Naive needs
no fitting; drift has one parameter, the mean daily log return of the
training history (every row before the split or the fold's cut); the ridge
is fitted on a fold's own training windows.
See docs/design.md, "Names, baselines and exchange calendars".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from training import features
from training.spec import WindowSpec

# Every baseline scored beside the model, in the order reports list them.
BASELINES: tuple[str, ...] = ("naive", "drift", "ridge")
# Baselines scored on the test split as well as in the backtest.
UNFITTED_BASELINES: tuple[str, ...] = ("naive", "drift")
# Candidate ridge penalties, chosen per fold by efficient leave-one-out on
# the fold's own training windows (RidgeCV), one per horizon step.
RIDGE_ALPHAS: tuple[float, ...] = tuple(float(alpha) for alpha in np.logspace(-2, 4, 13))


def naive_forecast(last: np.ndarray, horizon: int) -> np.ndarray:
    """Every future step equals the last observed value."""
    return np.repeat(np.asarray(last, dtype=np.float64)[:, None], horizon, axis=1)


def mean_log_return(label_history: np.ndarray) -> float:
    """Mean daily log return of a price history (the drift baseline's one parameter)."""
    history = np.asarray(label_history, dtype=np.float64)
    if history.size < 2:
        return 0.0
    return float(np.mean(np.diff(np.log(history))))


def drift_forecast(last: np.ndarray, horizon: int, mean_return: float) -> np.ndarray:
    """Mean-return drift: the last value grown by the history's mean daily log return per step.

    `mean_return` comes from the full training history (not the input
    window): the random walk with drift. The earlier drift, a straight line
    through the window's first and last value, chased a 40-day slope and was
    easy to beat.
    """
    steps = np.arange(1, horizon + 1, dtype=np.float64)
    return np.asarray(last, dtype=np.float64)[:, None] * np.exp(mean_return * steps)[None, :]


def unfitted_forecasts(label_windows: np.ndarray, horizon: int, label_history: np.ndarray) -> dict[str, np.ndarray]:
    """Naive and mean-return drift forecasts of the label's windows (n, window), in price units.

    `label_history` is the training history the drift's mean return is taken from.
    """
    last = label_windows[:, -1]
    return {
        "naive": naive_forecast(last, horizon),
        "drift": drift_forecast(last, horizon, mean_log_return(label_history)),
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
        "drift": "last value grown by the mean daily log return of every row before the cut",
        "ridge": f"RidgeCV on the {spec.window - 1} lagged daily log returns of '{spec.label}', "
        "one output per step, fitted on every row before the cut",
        "empirical_band": "the fold's training windows' empirical return quantiles per step (sharpness)",
    }
