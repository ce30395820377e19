"""Diebold-Mariano with the HLN correction, the binomial coverage check and the Winkler score."""

from __future__ import annotations

import numpy as np
import pytest

from training import significance


def test_a_clearly_smaller_loss_has_a_small_p_value_and_a_negative_statistic() -> None:
    rng = np.random.default_rng(0)
    reference = np.abs(rng.normal(size=500))
    result = significance.diebold_mariano(reference * 0.8, reference, horizon=1)
    assert result["statistic"] < 0
    assert result["p_value"] < 1e-6
    assert result["windows"] == 500 and result["lag"] == 0


def test_a_larger_loss_has_a_p_value_near_one() -> None:
    rng = np.random.default_rng(1)
    reference = np.abs(rng.normal(size=500))
    assert significance.diebold_mariano(reference * 1.2, reference, horizon=5)["p_value"] > 0.999


def test_a_tie_is_no_skill() -> None:
    losses = np.abs(np.random.default_rng(2).normal(size=100))
    result = significance.diebold_mariano(losses, losses.copy(), horizon=3)
    assert result["p_value"] == 1.0 and result["statistic"] is None


def test_the_hln_statistic_matches_a_hand_computation() -> None:
    differences = np.array([-1.0, 0.5, -0.5, -1.5, 0.0, -1.0, 0.5, -0.5])
    count, horizon = len(differences), 2
    centred = differences - differences.mean()
    gamma0 = np.dot(centred, centred) / count
    gamma1 = np.dot(centred[1:], centred[:-1]) / count
    raw = differences.mean() / np.sqrt((gamma0 + 2 * gamma1) / count)
    expected = raw * np.sqrt((count + 1 - 2 * horizon + horizon * (horizon - 1) / count) / count)
    result = significance.diebold_mariano(differences, np.zeros(count), horizon)
    assert result["statistic"] == pytest.approx(expected)


def test_under_the_null_p_values_below_five_percent_are_rare() -> None:
    rng = np.random.default_rng(4)
    rejections = [
        significance.diebold_mariano(np.abs(rng.normal(size=300)), np.abs(rng.normal(size=300)), 1)["p_value"] < 0.05
        for _ in range(400)
    ]
    assert 0.02 < np.mean(rejections) < 0.09


def test_coverage_tolerance_accepts_nominal_and_refuses_far_off_counts() -> None:
    assert significance.coverage_within_tolerance(900, 1000, 0.9, 0.05)["within"] is True
    assert significance.coverage_within_tolerance(860, 1000, 0.9, 0.05)["within"] is False
    assert significance.coverage_within_tolerance(950, 1000, 0.9, 0.05)["within"] is False


def test_winkler_score_is_width_plus_two_over_alpha_times_the_miss() -> None:
    actual = np.array([[1.0], [5.0]])
    lower, upper = np.array([[0.0], [2.0]]), np.array([[2.0], [4.0]])
    # Window 1 inside: 2. Window 2 misses by 1 above: 2 + 2 / 0.1 * 1 = 22.
    assert significance.winkler_score(actual, lower, upper, 0.9) == pytest.approx(12.0)


def test_the_minimum_detectable_effect_is_found_with_80_percent_power() -> None:
    # Independent loss differences of mean -effect: the one-sided test at 0.05 rejects about 80 % of the time.
    rng = np.random.default_rng(3)
    windows, runs = 200, 400
    effect = significance.minimum_detectable_effect(1 / np.sqrt(windows), windows, 0.05)
    assert effect is not None
    rejections = 0
    for _ in range(runs):
        differences = rng.standard_normal(windows) - effect
        rejections += significance.diebold_mariano(differences, np.zeros(windows), 1)["p_value"] < 0.05
    assert 0.72 < rejections / runs < 0.88


def test_holm_steps_down_and_stops_at_the_first_survivor() -> None:
    assert significance.holm_rejections([0.01, 0.04, 0.03], 0.05) == [True, False, False]
    assert significance.holm_rejections([0.01, 0.02, 0.03], 0.06) == [True, True, True]
    assert significance.holm_rejections([0.5, 0.2], 0.05) == [False, False]
