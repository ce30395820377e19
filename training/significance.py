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
        "standard_error": None,
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
    # The mean difference's standard error as the corrected statistic uses it: what a power calculation needs.
    result["standard_error"] = float(math.sqrt(variance / count) / correction) if correction > 0 else None
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


def minimum_detectable_effect(
    standard_error: float | None, windows: int, level: float, power: float = 0.8
) -> float | None:
    """The smallest true mean loss advantage a one-sided DM test at `level` finds with probability `power`.

    Under a true advantage delta the statistic is about t + delta / se, so it
    rejects with probability `power` when delta = (t_{1-level} + t_{power}) * se
    (Student's t, n - 1 degrees of freedom, as the test itself). None when the
    test had no variance to work with.
    """
    if standard_error is None or windows < 3 or not 0 < level < 1:
        return None
    from scipy import stats

    quantiles = stats.t.ppf(1 - level, df=windows - 1) + stats.t.ppf(power, df=windows - 1)
    return float(quantiles * standard_error)


def binomial_p_value(covered: int, count: int, level: float) -> float:
    """Exact two-sided binomial p-value of `covered` of `count` under Binomial(count, level); 0 for no outcomes."""
    from scipy import stats

    if count <= 0:
        return 0.0
    return float(stats.binomtest(int(covered), int(count), level).pvalue)


def holm_rejections(p_values: list[float], level: float) -> list[bool]:
    """Holm's step-down procedure: which of the hypotheses are rejected at family-wise level `level`.

    The smallest p-value is compared with level / m, the next with level / (m - 1),
    and so on, stopping at the first that is not below its bound.
    """
    order = sorted(range(len(p_values)), key=lambda index: p_values[index])
    rejected = [False] * len(p_values)
    for rank, index in enumerate(order):
        if not p_values[index] < level / (len(p_values) - rank):
            break
        rejected[index] = True
    return rejected
