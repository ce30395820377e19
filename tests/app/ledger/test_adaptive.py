"""Adaptive bands: the working level follows the live scores; the calibrated band stays until there are enough."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from app.ledger.adaptive import adaptive_bands, apply_bands, live_score

CALIBRATION = [[float(value) for value in np.linspace(0.1, 3.0, 99)]]
INTERVALS = {"half_widths": {"90": [CALIBRATION[0][89]]}, "calibration_scores": CALIBRATION}


def rows(scores: list[float]) -> list[dict[str, Any]]:
    return [{"step": 1, "log_error": score * 0.01, "scale": 0.01, "replay": 0, "split_suspect": 0} for score in scores]


def test_too_few_live_scores_keep_the_calibrated_band() -> None:
    bands = adaptive_bands(INTERVALS, rows([1.0] * 19), gamma=0.01, min_scores=20)
    assert bands.describe() == {"basis": "calibrated", "live_scores": 19}


def test_the_working_level_follows_the_recursion_of_gibbs_and_candes() -> None:
    live = [0.5, 2.9, 2.95, 0.2, 2.99] * 5
    bands = adaptive_bands(INTERVALS, rows(live), gamma=0.01, min_scores=5)
    # The recursion by hand: err_t = 1 when the score is above the quantile at 1 - alpha_t.
    ordered, alpha = np.asarray(CALIBRATION[0]), 0.1
    for score in live:
        rank = math.ceil(round(100 * (1 - alpha), 9))
        quantile = math.inf if rank > 99 else ordered[rank - 1]
        alpha += 0.01 * (0.1 - float(score > quantile))
    assert bands.basis == "adaptive" and bands.working_levels["90"] == [round(1 - alpha, 6)]
    nominal = ordered[math.ceil(round(100 * 0.9, 9)) - 1]
    rank = math.ceil(round(100 * (1 - alpha), 9))
    assert bands.factors["90"][0] == (ordered[min(rank, 99) - 1] / nominal)
    assert bands.factors["90"][0] > 1  # more misses than 10 %: the band widened


def test_replays_and_split_suspects_do_not_move_the_band() -> None:
    misses = [{**row, "replay": 1} for row in rows([2.99] * 30)] + [
        {**row, "split_suspect": 1} for row in rows([2.99] * 30)
    ]
    assert adaptive_bands(INTERVALS, misses, gamma=0.01, min_scores=5).basis == "calibrated"


def test_a_version_without_calibration_scores_stays_calibrated() -> None:
    bands = adaptive_bands({"half_widths": INTERVALS["half_widths"]}, rows([1.0] * 50), gamma=0.01, min_scores=5)
    assert bands.basis == "calibrated"


def test_applying_a_factor_scales_the_half_width_in_log_space() -> None:
    bands = adaptive_bands(INTERVALS, rows([2.99] * 40), gamma=0.01, min_scores=5)
    ratio = bands.factors["90"][0]
    outputs = np.array([[[100.0], [95.0], [105.0]]])
    adapted = apply_bands(outputs, ("90",), bands)
    assert adapted[0, 0, 0] == 100.0
    assert math.isclose(math.log(100 / adapted[0, 1, 0]), math.log(100 / 95.0) * ratio, rel_tol=1e-12)
    assert math.isclose(math.log(adapted[0, 2, 0] / 100), math.log(105.0 / 100) * ratio, rel_tol=1e-12)


def test_live_score_is_studentised_when_the_window_had_a_scale() -> None:
    assert live_score({"log_error": -0.02, "scale": 0.01}) == 2.0
    assert live_score({"log_error": -0.02, "scale": None}) == 0.02
