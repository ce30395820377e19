"""The forecast ledger's statistics: band coverage tests, skill against naive, adaptive bands.

Pure functions of arrays in time order, no I/O, so the monitoring report
and the tests compute the same figures from the same score rows. Coverage:
Kupiec's and Christoffersen's likelihood-ratio tests. Skill: a sign-test
e-process a desk may read after every score without inflating its false
alarms. Bands: adaptive conformal inference's working miscoverage and the
calibration quantile it selects. Undefined figures are None, never NaN,
so every answer is plain JSON. See docs/ledger.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

Flags = Sequence[bool] | np.ndarray
Values = Sequence[float] | np.ndarray

# Far above any 1/alpha a desk would use and still a finite JSON number; the
# minimum of an e-process and a constant is still an e-process.
E_VALUE_CAP = 1e300


def _flags(breaches: Flags) -> np.ndarray:
    flags = np.asarray(breaches, dtype=bool)
    if flags.ndim != 1:
        raise ValueError(f"breaches must be one flag per scored step (1-D), got shape {flags.shape}")
    return flags


def _values(values: Values, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite numbers")
    return array


def _miscoverage(level: float) -> float:
    """1 - level as the decimal it was meant as: 1 - 0.9 is 0.1, not 0.09999999999999998."""
    if not 0 < level < 1:
        raise ValueError(f"band level must be between 0 and 1, got {level}")
    return round(1 - level, 12)


def _bernoulli_log_likelihood(hits: float, misses: float, rate: float) -> float:
    """log(rate^hits (1 - rate)^misses), with 0 * log 0 = 0 so a rate of 0 or 1 is allowed."""
    return _xlogy(hits, rate) + _xlogy(misses, 1 - rate)


def _xlogy(count: float, probability: float) -> float:
    return 0.0 if count == 0 else count * math.log(probability)


def chi2_survival(statistic: float, degrees: int) -> float:
    """P(chi-squared with 1 or 2 degrees of freedom > statistic), in closed form (no scipy at import)."""
    if degrees == 1:
        return math.erfc(math.sqrt(max(statistic, 0.0) / 2))
    if degrees == 2:
        return math.exp(-max(statistic, 0.0) / 2)
    raise ValueError(f"closed form for 1 or 2 degrees of freedom only, got {degrees}")


def kupiec_pof(breaches: Flags, level: float) -> dict[str, Any]:
    """Kupiec (1995) proportion-of-failures test of a band of nominal coverage `level`.

    H0: each step falls outside the band with probability p = 1 - level.
    LR = -2 log[L(p) / L(x/n)] over x breaches in n steps, chi-squared with
    one degree of freedom under H0. No steps: `lr` and `p_value` are None.
    """
    expected = _miscoverage(level)
    flags = _flags(breaches)
    observations, count = int(flags.size), int(flags.sum())
    if observations == 0:
        return {
            "observations": 0,
            "breaches": 0,
            "expected_rate": expected,
            "observed_rate": None,
            "lr": None,
            "p_value": None,
        }
    observed = count / observations
    misses = observations - count
    ratio = _bernoulli_log_likelihood(count, misses, expected) - _bernoulli_log_likelihood(count, misses, observed)
    # The unrestricted fit is at least as likely; rounding may leave a hair below zero.
    lr = max(0.0, -2.0 * ratio)
    return {
        "observations": observations,
        "breaches": count,
        "expected_rate": expected,
        "observed_rate": observed,
        "lr": lr,
        "p_value": chi2_survival(lr, 1),
    }


def christoffersen_independence(breaches: Flags) -> dict[str, Any]:
    """Christoffersen (1998) test that a breach does not make the next one more or less likely.

    From the transition counts n_ij (state i followed by state j, 1 = breach):
    pi01 = n01 / (n00 + n01), pi11 = n11 / (n10 + n11), pi = (n01 + n11) / (n - 1);
    LR = -2 log[L(pi) / L(pi01, pi11)], chi-squared with one degree of
    freedom. A state never left has no rate (None) and adds nothing to either
    likelihood (0 * log 0 = 0). Fewer than two steps: `lr`, `p_value` None.
    """
    flags = _flags(breaches)
    before, after = flags[:-1], flags[1:]
    n00 = int(np.sum(~before & ~after))
    n01 = int(np.sum(~before & after))
    n10 = int(np.sum(before & ~after))
    n11 = int(np.sum(before & after))
    counts = {"n00": n00, "n01": n01, "n10": n10, "n11": n11}
    if flags.size < 2:
        return {**counts, "pi01": None, "pi11": None, "pi": None, "lr": None, "p_value": None}
    pi01 = n01 / (n00 + n01) if n00 + n01 else None
    pi11 = n11 / (n10 + n11) if n10 + n11 else None
    pi = (n01 + n11) / (flags.size - 1)
    # A rate of a state never left multiplies zero counts: any placeholder gives 0.
    separate = _bernoulli_log_likelihood(n01, n00, pi01 or 0.0) + _bernoulli_log_likelihood(n11, n10, pi11 or 0.0)
    pooled = _bernoulli_log_likelihood(n01 + n11, n00 + n10, pi)
    lr = max(0.0, -2.0 * (pooled - separate))
    return {**counts, "pi01": pi01, "pi11": pi11, "pi": pi, "lr": lr, "p_value": chi2_survival(lr, 1)}


def christoffersen_conditional(breaches: Flags, level: float) -> dict[str, Any]:
    """Christoffersen's conditional coverage test: LR_pof + LR_ind, chi-squared with two degrees of freedom.

    Right rate and no clustering at once; the sum as it is commonly reported
    (Kupiec's LR over all n steps, independence over the n - 1 transitions).
    Fewer than two steps: `lr` and `p_value` are None.
    """
    pof = kupiec_pof(breaches, level)
    independence = christoffersen_independence(breaches)
    if pof["lr"] is None or independence["lr"] is None:
        return {"lr_pof": pof["lr"], "lr_ind": independence["lr"], "lr": None, "p_value": None}
    lr = pof["lr"] + independence["lr"]
    return {"lr_pof": pof["lr"], "lr_ind": independence["lr"], "lr": lr, "p_value": chi2_survival(lr, 2)}


def _uniform_bet_mixture(successes: np.ndarray, failures: np.ndarray) -> np.ndarray:
    """The integral over bets b in [0, 1] of (1 + b)^successes (1 - b)^failures, in closed form.

    With u = (1 + b) / 2 it is 2^(s+f+1) B(s+1, f+1) P(Beta(s+1, f+1) > 1/2),
    and that tail is I_{1/2}(f+1, s+1); summed in logs so long runs neither
    overflow nor lose precision.
    """
    # Imported here: scipy.special costs the API process memory and start-up time it needs only for reports.
    from scipy import special

    with np.errstate(divide="ignore", over="ignore"):
        log_value = (
            (successes + failures + 1) * math.log(2.0)
            + special.betaln(successes + 1.0, failures + 1.0)
            + np.log(special.betainc(failures + 1.0, successes + 1.0, 0.5))
        )
        return np.minimum(np.exp(log_value), E_VALUE_CAP)


def sign_e_processes(model_losses: Values, naive_losses: Values) -> tuple[np.ndarray, np.ndarray]:
    """E-process paths, after each score, of "the model beats naive" and "naive beats the model".

    Losses are paired along the last axis in the order the scores became
    known (extra leading axes are independent sequences). Each step is a
    win (model loss below naive's), a loss or a tie; ties leave both paths
    unchanged. See `sequential_skill_test` for the hypotheses.
    """
    model = _values(model_losses, "model losses")
    naive = _values(naive_losses, "naive losses")
    if model.shape != naive.shape:
        raise ValueError(f"model and naive losses must pair up, got shapes {model.shape} and {naive.shape}")
    wins = np.cumsum(model < naive, axis=-1)
    losses = np.cumsum(model > naive, axis=-1)
    return _uniform_bet_mixture(wins, losses), _uniform_bet_mixture(losses, wins)


def sequential_skill_test(model_losses: Values, naive_losses: Values, alpha: float = 0.05) -> dict[str, Any]:
    """Anytime-valid test of skill against naive from paired losses in time order.

    d_t = naive loss - model loss. `e_value_better` tests H0: given the past,
    P(d_t > 0) <= P(d_t < 0) at every step (the model is not better than
    naive); `e_value_worse` tests the mirror H0 (the model is at least as
    good). Each is a bettor's wealth on sign(d_t), a mean bounded in
    [-1, 1], mixed over a uniform bet size in [0, 1]: the betting
    construction of Waudby-Smith & Ramdas (2024, "Estimating means of
    bounded random variables by betting", JRSS-B). Signs need no scale or
    tail assumption, so the null is exact. By Ville's inequality P(an
    e-value ever reaches 1/alpha) <= alpha under its H0: a desk may look
    after every score and act on the first crossing.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    model = _values(model_losses, "model losses")
    naive = _values(naive_losses, "naive losses")
    if model.ndim != 1 or model.shape != naive.shape:
        raise ValueError(
            f"model and naive losses must be two 1-D series of one length, got {model.shape} and {naive.shape}"
        )
    wins, losses = int(np.sum(model < naive)), int(np.sum(model > naive))
    better = float(_uniform_bet_mixture(np.asarray(wins), np.asarray(losses)))
    worse = float(_uniform_bet_mixture(np.asarray(losses), np.asarray(wins)))
    return {
        "scores": int(model.size),
        "wins": wins,
        "losses": losses,
        "ties": int(model.size) - wins - losses,
        "e_value_better": better,
        "e_value_worse": worse,
        "alpha": alpha,
        "beats_naive": better >= 1 / alpha,
        "worse_than_naive": worse >= 1 / alpha,
    }


def aci_update(miscoverage: float, breached: bool, level: float, gamma: float) -> float:
    """One step of adaptive conformal inference: alpha_{t+1} = alpha_t + gamma (alpha - err_t)."""
    return miscoverage + gamma * (_miscoverage(level) - float(breached))


def aci_levels(breaches: Flags, level: float, gamma: float) -> list[float]:
    """Working miscoverage path of adaptive conformal inference (Gibbs & Candès 2021, NeurIPS).

    alpha_1 = 1 - level; alpha_{t+1} = alpha_t + gamma (alpha - err_t),
    err_t = 1 when step t fell outside its band. `breaches` must be those
    of the bands served at this path's own levels. Returns n + 1 values:
    entry t is the miscoverage step t was served at, the last the next one.
    The path is not clipped: below 0 the band is infinite, at 1 or above empty.
    """
    target = _miscoverage(level)
    if gamma <= 0:
        raise ValueError(f"gamma must be positive, got {gamma}")
    path = [target]
    for breached in _flags(breaches):
        path.append(aci_update(path[-1], bool(breached), level, gamma))
    return path


def quantile_at(sorted_scores: np.ndarray, miscoverage: float) -> float:
    """The split-conformal score quantile for a miscoverage: the ceil((n + 1)(1 - miscoverage))-th smallest.

    `sorted_scores` are the n calibration scores in ascending order. +inf
    when miscoverage <= 0 or the rank exceeds n (the honest band is
    unbounded); 0.0 when miscoverage >= 1 (the empty band of Gibbs & Candès,
    which is sure to be breached and so pulls the miscoverage back down);
    the smallest score when the rank rounds below 1.
    """
    scores = np.asarray(sorted_scores, dtype=np.float64)
    if scores.ndim != 1:
        raise ValueError(f"calibration scores must be 1-D, got shape {scores.shape}")
    if np.any(np.diff(scores) < 0):
        raise ValueError("calibration scores must be sorted in ascending order")
    if miscoverage >= 1:
        return 0.0
    if miscoverage <= 0:
        return math.inf
    # Rounded first, as training.conformal does, so that 10 * 0.9 is rank 9, not 10.
    rank = max(math.ceil(round((scores.size + 1) * (1 - miscoverage), 9)), 1)
    return math.inf if rank > scores.size else float(scores[rank - 1])


def adaptive_half_width(sorted_scores: np.ndarray, breaches: Flags, level: float, gamma: float) -> float:
    """The half-width, in score units, of the next adaptive band: the quantile at the current miscoverage."""
    return quantile_at(sorted_scores, aci_levels(breaches, level, gamma)[-1])


def ratio_to_naive(model_losses: Values, naive_losses: Values) -> float | None:
    """Mean model loss over mean naive loss on the same scores; None without scores or with a zero naive mean."""
    model = _values(model_losses, "model losses")
    naive = _values(naive_losses, "naive losses")
    if model.shape != naive.shape:
        raise ValueError(f"model and naive losses must pair up, got shapes {model.shape} and {naive.shape}")
    if model.size == 0:
        return None
    naive_mean = float(np.mean(naive))
    return float(np.mean(model)) / naive_mean if naive_mean > 0 else None


def directional_hit_rate(forecast_returns: Values, actual_returns: Values) -> float | None:
    """Share of moves whose direction the forecast got right, as training.evaluation counts it.

    A forecast of no move, or a day without one, has no direction to get
    right and is left out; None when nothing is left.
    """
    forecast = np.sign(_values(forecast_returns, "forecast returns"))
    actual = np.sign(_values(actual_returns, "actual returns"))
    if forecast.shape != actual.shape:
        raise ValueError(f"forecast and actual returns must pair up, got shapes {forecast.shape} and {actual.shape}")
    scored = (forecast != 0) & (actual != 0)
    return float(np.mean(forecast[scored] == actual[scored])) if scored.any() else None


def always_up_rate(actual_returns: Values) -> float | None:
    """Share of moves that were up: the hit rate of always forecasting a rise; days without a move left out."""
    actual = _values(actual_returns, "actual returns")
    moved = actual != 0
    return float(np.mean(actual[moved] > 0)) if moved.any() else None
