"""Statistical evidence for forecast skill: the Diebold-Mariano test and a binomial coverage check.

Pure functions of paired per-window losses. The promotion gate reads them;
the walk-forward backtest records them in every version's metadata. The DM
test (Diebold-Mariano 1995, with the Harvey-Leybourne-Newbold small-sample
correction) is one-sided: its p-value is the probability of a mean loss
difference this negative when the model is no better than the reference.
See docs/design.md, "Promotion gate and the default version".
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def _long_run_variance(differences: np.ndarray, lag: int) -> float:
    """Autocovariance sum up to `lag` (rectangular kernel), with Bartlett weights if that is not positive."""
    centred = differences - differences.mean()
    count = len(centred)
    autocovariances = [float(np.dot(centred[k:], centred[: count - k]) / count) for k in range(min(lag, count - 1) + 1)]
    rectangular = autocovariances[0] + 2 * sum(autocovariances[1:])
    if rectangular > 0:
        return rectangular
    # The truncated rectangular sum can go negative in small samples; the
    # Newey-West (Bartlett) weights keep it positive.
    return autocovariances[0] + 2 * sum(
        (1 - k / (lag + 1)) * value for k, value in enumerate(autocovariances[1:], start=1)
    )


def diebold_mariano(model_loss: np.ndarray, reference_loss: np.ndarray, horizon: int) -> dict[str, Any]:
    """One-sided DM test (HLN-corrected) that the model's mean loss is below the reference's.

    Losses are one number per window in time order. d_t = loss(model)_t -
    loss(reference)_t; the long-run variance of its mean sums the
    autocovariances up to lag h - 1 (an h-step error is at most MA(h-1) under
    the null); the statistic is multiplied by sqrt((n + 1 - 2h + h(h - 1)/n) / n)
    and compared with Student's t with n - 1 degrees of freedom. A tie (every
    d_t zero) has p-value 1. Returns the statistic, p-value, mean loss
    difference and window count.
    """
    from scipy import stats

    model_loss = np.asarray(model_loss, dtype=np.float64)
    reference_loss = np.asarray(reference_loss, dtype=np.float64)
    if model_loss.shape != reference_loss.shape or model_loss.ndim != 1:
        raise ValueError(
            f"losses must be two 1-D arrays of one shape, got {model_loss.shape} and {reference_loss.shape}"
        )
    differences = model_loss - reference_loss
    count = len(differences)
    result: dict[str, Any] = {
        "statistic": None,
        "p_value": 1.0,
        "mean_loss_difference": float(differences.mean()) if count else None,
        "windows": count,
        "lag": horizon - 1,
        "test": "Diebold-Mariano, one-sided, HAC variance lag h-1, Harvey-Leybourne-Newbold correction",
    }
    if count < 3 or not np.any(differences):
        return result
    variance = _long_run_variance(differences, horizon - 1)
    if variance <= 0:
        return result
    statistic = float(differences.mean() / math.sqrt(variance / count))
    correction = math.sqrt(max(count + 1 - 2 * horizon + horizon * (horizon - 1) / count, 0.0) / count)
    statistic *= correction
    result["statistic"] = statistic
    result["p_value"] = float(stats.t.cdf(statistic, df=count - 1))
    return result


def coverage_within_tolerance(covered: int, count: int, level: float, significance: float) -> dict[str, Any]:
    """Whether `covered` of `count` outcomes is a plausible draw from Binomial(count, level).

    The accepted range is the central (1 - significance) binomial interval
    around the nominal level, so a well-calibrated band fails it with
    probability about `significance`.
    """
    from scipy import stats

    if count <= 0:
        return {"within": False, "covered": covered, "windows": count, "low": None, "high": None}
    low = int(stats.binom.ppf(significance / 2, count, level))
    high = int(stats.binom.ppf(1 - significance / 2, count, level))
    return {
        "within": low <= covered <= high,
        "covered": int(covered),
        "windows": int(count),
        "coverage": covered / count,
        "low": low / count,
        "high": high / count,
    }


def winkler_score(actual: np.ndarray, lower: np.ndarray, upper: np.ndarray, level: float) -> float:
    """Mean interval (Winkler) score of a central band: width plus 2/alpha times each miss; lower is better."""
    actual = np.asarray(actual, dtype=np.float64)
    alpha = 1 - level
    below = np.maximum(lower - actual, 0.0)
    above = np.maximum(actual - upper, 0.0)
    return float(np.mean((upper - lower) + (2 / alpha) * (below + above)))
