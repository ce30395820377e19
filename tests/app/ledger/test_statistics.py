"""The ledger's statistics against hand computations and published values, not against themselves."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from app.ledger.statistics import (
    aci_levels,
    adaptive_half_width,
    always_up_rate,
    christoffersen_conditional,
    christoffersen_independence,
    directional_hit_rate,
    kupiec_pof,
    quantile_at,
    ratio_to_naive,
    sequential_skill_test,
    sign_e_processes,
)


def breach_flags(breaches: int, observations: int) -> list[bool]:
    return [True] * breaches + [False] * (observations - breaches)


def chi2_one_sf(lr: float) -> float:
    """Chi-squared(1) survival in closed form: P(Z^2 > lr) = erfc(sqrt(lr / 2))."""
    return math.erfc(math.sqrt(lr / 2))


# Kupiec


def test_kupiec_five_breaches_in_250_days_at_99_percent_by_hand() -> None:
    result = kupiec_pof(breach_flags(5, 250), 0.99)

    by_hand = -2 * ((245 * math.log(0.99) + 5 * math.log(0.01)) - (245 * math.log(0.98) + 5 * math.log(0.02)))
    assert result["observations"] == 250
    assert result["breaches"] == 5
    assert result["expected_rate"] == pytest.approx(0.01)
    assert result["observed_rate"] == pytest.approx(0.02)
    assert result["lr"] == pytest.approx(by_hand, rel=1e-12)
    assert result["lr"] == pytest.approx(1.957, abs=0.001)
    assert result["p_value"] == pytest.approx(chi2_one_sf(by_hand), rel=1e-9)


@pytest.mark.parametrize(
    ("breaches", "lr"),
    # T = 250, p = 0.01: the values behind the usual non-rejection region of 1 to 6 breaches (Jorion, Value at Risk).
    [(0, 5.025), (1, 1.177), (4, 0.769), (6, 3.555), (7, 5.497), (8, 7.734)],
)
def test_kupiec_reference_values_for_250_days_at_99_percent(breaches: int, lr: float) -> None:
    result = kupiec_pof(breach_flags(breaches, 250), 0.99)

    # The binomial coefficient cancels in the ratio, so binomial log-probabilities give the same LR independently.
    independent = 2 * (stats.binom.logpmf(breaches, 250, breaches / 250) - stats.binom.logpmf(breaches, 250, 0.01))
    assert result["lr"] == pytest.approx(independent, rel=1e-9, abs=1e-12)
    assert result["lr"] == pytest.approx(lr, abs=0.001)


def test_kupiec_does_not_reject_one_to_six_breaches_in_250_days_at_99_percent() -> None:
    kept = [count for count in range(16) if kupiec_pof(breach_flags(count, 250), 0.99)["p_value"] > 0.05]

    assert kept == [1, 2, 3, 4, 5, 6]


def test_kupiec_with_no_breaches_and_with_only_breaches() -> None:
    none = kupiec_pof(breach_flags(0, 250), 0.99)
    every = kupiec_pof(breach_flags(3, 3), 0.9)

    assert none["lr"] == pytest.approx(-2 * 250 * math.log(0.99))
    assert none["observed_rate"] == 0.0
    assert every["lr"] == pytest.approx(-2 * 3 * math.log(0.1))
    assert every["observed_rate"] == 1.0


def test_kupiec_with_no_observations_has_no_statistic() -> None:
    assert kupiec_pof([], 0.9) == {
        "observations": 0,
        "breaches": 0,
        "expected_rate": pytest.approx(0.1),
        "observed_rate": None,
        "lr": None,
        "p_value": None,
    }


def test_kupiec_at_exactly_the_nominal_rate_is_zero() -> None:
    result = kupiec_pof(breach_flags(10, 100), 0.9)

    assert result["lr"] == 0.0
    assert result["p_value"] == 1.0


def test_kupiec_refuses_a_level_outside_zero_one() -> None:
    with pytest.raises(ValueError, match="band level must be between 0 and 1, got 90"):
        kupiec_pof([True], 90)


# Christoffersen


def test_christoffersen_independence_counts_a_hand_built_sequence() -> None:
    # Transitions of 0 0 1 1 0 0 0 1 0 0: 00 01 11 10 00 00 01 10 00.
    result = christoffersen_independence([0, 0, 1, 1, 0, 0, 0, 1, 0, 0])

    assert (result["n00"], result["n01"], result["n10"], result["n11"]) == (4, 2, 2, 1)
    assert result["pi01"] == pytest.approx(2 / 6)
    assert result["pi11"] == pytest.approx(1 / 3)
    assert result["pi"] == pytest.approx(3 / 9)
    # Both states lead to a breach a third of the time: no evidence of clustering at all.
    assert result["lr"] == pytest.approx(0.0, abs=1e-12)
    assert result["p_value"] == pytest.approx(1.0)


def test_christoffersen_independence_of_clustered_breaches_by_hand() -> None:
    # Transitions of 0 0 0 1 1 1 0 0 0 0 1 1 0 0 0 0: n00 = 8, n01 = 2, n10 = 2, n11 = 3.
    result = christoffersen_independence([0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0])

    pooled = 10 * math.log(2 / 3) + 5 * math.log(1 / 3)
    separate = 8 * math.log(0.8) + 2 * math.log(0.2) + 2 * math.log(0.4) + 3 * math.log(0.6)
    assert (result["n00"], result["n01"], result["n10"], result["n11"]) == (8, 2, 2, 3)
    assert result["pi01"] == pytest.approx(0.2)
    assert result["pi11"] == pytest.approx(0.6)
    assert result["lr"] == pytest.approx(-2 * (pooled - separate), rel=1e-12)
    assert result["p_value"] == pytest.approx(chi2_one_sf(-2 * (pooled - separate)), rel=1e-9)


@pytest.mark.parametrize(
    ("sequence", "pi01", "pi11", "lr"),
    [
        ([0] * 10, 0.0, None, 0.0),
        ([0, 0, 0, 1], 1 / 3, None, 0.0),
        ([1, 1, 1], None, 1.0, 0.0),
        # Always switching: pi01 = 1 and pi11 = 0, so only the pooled likelihood is below one.
        ([0, 1, 0, 1, 0, 1, 0, 1], 1.0, 0.0, -2 * (4 * math.log(4 / 7) + 3 * math.log(3 / 7))),
    ],
)
def test_christoffersen_independence_degenerate_sequences_give_numbers_not_nan(
    sequence: list[int], pi01: float | None, pi11: float | None, lr: float
) -> None:
    result = christoffersen_independence(sequence)

    assert result["pi01"] == (None if pi01 is None else pytest.approx(pi01))
    assert result["pi11"] == (None if pi11 is None else pytest.approx(pi11))
    assert result["lr"] == pytest.approx(lr, abs=1e-12)
    assert math.isfinite(result["p_value"])


@pytest.mark.parametrize("sequence", [[], [True]])
def test_christoffersen_needs_two_steps(sequence: list[bool]) -> None:
    assert christoffersen_independence(sequence)["lr"] is None
    assert christoffersen_conditional(sequence, 0.9)["lr"] is None
    assert christoffersen_conditional(sequence, 0.9)["p_value"] is None


def test_christoffersen_conditional_adds_both_statistics_on_two_degrees_of_freedom() -> None:
    sequence = [0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0]
    result = christoffersen_conditional(sequence, 0.9)

    pof = kupiec_pof(sequence, 0.9)["lr"]
    independence = christoffersen_independence(sequence)["lr"]
    assert result["lr_pof"] == pof
    assert result["lr_ind"] == independence
    assert result["lr"] == pytest.approx(pof + independence)
    # Chi-squared(2) survival is exp(-x / 2).
    assert result["p_value"] == pytest.approx(math.exp(-(pof + independence) / 2), rel=1e-9)


# The anytime-valid skill test


def test_e_values_start_at_one() -> None:
    empty = sequential_skill_test([], [])
    better, worse = sign_e_processes([1.0, 0.5], [1.0, 1.0])

    assert (empty["e_value_better"], empty["e_value_worse"]) == (1.0, 1.0)
    # The first step is a tie: no bet is won or lost.
    assert (better[0], worse[0]) == (pytest.approx(1.0), pytest.approx(1.0))


def test_the_e_value_is_the_uniform_mixture_of_bets() -> None:
    # Three wins, one loss: the integral of (1 + b)^3 (1 - b) over b in [0, 1], exactly.
    wealth = np.polynomial.Polynomial([1, 1]) ** 3 * np.polynomial.Polynomial([1, -1])
    expected = wealth.integ()(1.0) - wealth.integ()(0.0)

    result = sequential_skill_test([1, 1, 2, 1], [2, 2, 1, 3])

    assert (result["wins"], result["losses"], result["ties"]) == (3, 1, 0)
    assert result["e_value_better"] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(("wins", "losses"), [(0, 0), (3, 1), (20, 25), (300, 280)])
def test_the_e_value_is_a_fair_game_when_wins_and_losses_are_equally_likely(wins: int, losses: int) -> None:
    """Its expected next value at P(win) = P(loss) = 1/2 is its value now: a martingale, so H0 cannot grow it."""

    def e_value(wins: int, losses: int) -> float:
        return float(
            sequential_skill_test([0.0] * wins + [1.0] * losses, [1.0] * wins + [0.0] * losses)["e_value_better"]
        )

    now = e_value(wins, losses)
    assert 0.5 * e_value(wins + 1, losses) + 0.5 * e_value(wins, losses + 1) == pytest.approx(now, rel=1e-9)


def test_a_strongly_better_model_is_found_within_a_few_hundred_steps() -> None:
    generator = np.random.default_rng(7)
    naive = np.abs(generator.standard_t(4, size=1000))
    model = 0.5 * np.abs(generator.standard_t(4, size=1000))

    better, worse = sign_e_processes(model, naive)
    result = sequential_skill_test(model, naive, alpha=0.05)

    assert np.all(better >= 0) and np.all(worse >= 0)
    assert int(np.argmax(better >= 20)) < 300
    assert np.all(worse < 20)
    assert result["beats_naive"] is True
    assert result["worse_than_naive"] is False
    assert result["e_value_better"] == pytest.approx(better[-1])


def test_exchangeable_losses_raise_no_alarm_in_either_direction() -> None:
    generator = np.random.default_rng(11)
    naive = np.abs(generator.standard_t(4, size=1000))
    model = np.abs(generator.standard_t(4, size=1000))

    better, worse = sign_e_processes(model, naive)

    assert np.all(better >= 0) and np.all(worse >= 0)
    assert better.max() < 20
    assert worse.max() < 20
    result = sequential_skill_test(model, naive)
    assert (result["beats_naive"], result["worse_than_naive"]) == (False, False)


def test_a_worse_model_is_found_by_the_mirror_test() -> None:
    generator = np.random.default_rng(3)
    naive = np.abs(generator.standard_t(4, size=600))

    result = sequential_skill_test(2 * naive + 0.01, naive)

    assert result["losses"] == 600
    assert result["worse_than_naive"] is True
    assert result["beats_naive"] is False


def test_the_e_processes_run_over_many_desks_at_once() -> None:
    generator = np.random.default_rng(5)
    model = np.abs(generator.standard_t(4, size=(3, 50)))
    naive = np.abs(generator.standard_t(4, size=(3, 50)))

    better, _ = sign_e_processes(model, naive)

    assert better.shape == (3, 50)
    assert better[1, -1] == pytest.approx(sequential_skill_test(model[1], naive[1])["e_value_better"])


def test_the_skill_test_refuses_unpaired_or_non_finite_losses() -> None:
    with pytest.raises(ValueError, match=r"model and naive losses must be two 1-D series of one length, got \(2,\)"):
        sequential_skill_test([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="model losses must be finite numbers"):
        sequential_skill_test([math.nan], [1.0])
    with pytest.raises(ValueError, match="alpha must be between 0 and 1, got 5"):
        sequential_skill_test([1.0], [1.0], alpha=5)


# Adaptive conformal inference


def test_aci_levels_follow_the_recursion_by_hand() -> None:
    # level 0.9, gamma 0.1: a covered step adds 0.1 * 0.1, a breach adds 0.1 * (0.1 - 1).
    path = aci_levels([False, True, False, False, True], 0.9, 0.1)

    assert path == pytest.approx([0.1, 0.11, 0.02, 0.03, 0.04, -0.05])


def test_aci_levels_without_scores_is_the_nominal_miscoverage() -> None:
    assert aci_levels([], 0.8, 0.005) == [pytest.approx(0.2)]


def test_aci_levels_refuses_a_gamma_that_does_not_move() -> None:
    with pytest.raises(ValueError, match="gamma must be positive, got 0"):
        aci_levels([True], 0.9, 0)


@pytest.mark.parametrize(
    ("miscoverage", "quantile"),
    [
        (0.1, 9.0),  # ceil(10 * 0.9) = 9
        (0.2, 8.0),  # ceil(10 * 0.8) = 8
        (0.25, 8.0),  # ceil(7.5) = 8
        (0.05, math.inf),  # ceil(9.5) = 10 > 9 scores
        (0.0, math.inf),
        (-0.3, math.inf),
        (0.95, 1.0),  # ceil(0.5) = 1
        (0.9999, 1.0),
        (1.0, 0.0),
        (1.7, 0.0),
    ],
)
def test_quantile_at_picks_the_conformal_rank(miscoverage: float, quantile: float) -> None:
    assert quantile_at(np.arange(1.0, 10.0), miscoverage) == quantile


def test_quantile_at_without_scores_is_unbounded() -> None:
    assert quantile_at(np.array([]), 0.5) == math.inf


def test_quantile_at_refuses_unsorted_scores() -> None:
    with pytest.raises(ValueError, match="calibration scores must be sorted in ascending order"):
        quantile_at(np.array([2.0, 1.0]), 0.5)


def test_adaptive_half_width_narrows_after_covered_steps_and_widens_after_breaches() -> None:
    scores = np.arange(1.0, 10.0)

    # level 0.8, gamma 0.1: six covered steps move alpha from 0.2 to 0.32, rank ceil(10 * 0.68) = 7.
    assert adaptive_half_width(scores, [], 0.8, 0.1) == 8.0
    assert adaptive_half_width(scores, [False] * 6, 0.8, 0.1) == 7.0
    # One breach: alpha 0.2 - 0.08 = 0.12, rank ceil(8.8) = 9.
    assert adaptive_half_width(scores, [True], 0.8, 0.1) == 9.0
    assert adaptive_half_width(scores, [True, True, True], 0.8, 0.1) == math.inf


# Ratio and direction


def test_ratio_to_naive_is_a_ratio_of_means() -> None:
    assert ratio_to_naive([1.0, 2.0], [2.0, 2.0]) == pytest.approx(0.75)
    assert ratio_to_naive([], []) is None
    assert ratio_to_naive([1.0], [0.0]) is None


def test_directional_hit_rate_leaves_out_moves_without_a_direction() -> None:
    # Scored: the first (both up, a hit) and the second (down against up, a miss).
    assert directional_hit_rate([0.1, -0.2, 0.0, 0.3], [0.2, 0.1, 0.5, 0.0]) == 0.5
    assert directional_hit_rate([0.0], [0.1]) is None


def test_always_up_rate_is_the_share_of_rises_among_moves() -> None:
    assert always_up_rate([0.1, -0.1, 0.0, 0.2]) == pytest.approx(2 / 3)
    assert always_up_rate([]) is None


def test_the_api_process_starts_without_scipy() -> None:
    # scipy.stats at import cost the API process about 65 MiB and half a second of start-up; the closed forms
    # above replace it, and the e-process imports scipy.special only when a report is computed.
    import subprocess
    import sys

    code = "import sys, app.main; print('scipy' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_the_closed_form_chi2_tails_match_the_textbook_quantiles() -> None:
    from app.ledger.statistics import chi2_survival

    # The 95 % quantiles of chi-squared with 1 and 2 degrees of freedom.
    assert chi2_survival(3.841458820694124, 1) == pytest.approx(0.05, abs=1e-12)
    assert chi2_survival(5.991464547107979, 2) == pytest.approx(0.05, abs=1e-12)
