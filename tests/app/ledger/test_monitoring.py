"""The monitoring answer from hand-built score rows: figures the test computes itself, windows, statuses."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from app.ledger.monitoring import monitoring_report
from tests.helpers import score_row, session

THRESHOLDS = {"coverage_alpha": 0.01, "skill_alpha": 0.05, "min_scores": 20}
LEVELS = ("80", "90", "95")


def report(rows: list[dict[str, Any]], **options: Any) -> dict[str, Any]:
    return monitoring_report(rows, options.pop("counts", None), **{**THRESHOLDS, **options})


def only_group(answer: dict[str, Any]) -> dict[str, Any]:
    (group,) = answer["groups"]
    return group


def random_rows(sessions: int, horizon: int, seed: int) -> list[dict[str, Any]]:
    """`horizon` steps per session, random prices and band hits."""
    rng = np.random.default_rng(seed)
    return [
        score_row(
            origin,
            step=step,
            actual=float(100 * math.exp(rng.normal(scale=0.02))),
            forecast=float(100 * math.exp(rng.normal(scale=0.01))),
            naive=100.0,
            inside={level: int(rng.random() < 0.85) for level in LEVELS},
        )
        for origin in range(sessions)
        for step in range(1, horizon + 1)
    ]


def test_figures_equal_what_the_rows_give_by_hand() -> None:
    rows = random_rows(30, horizon=2, seed=1)
    group = only_group(report(rows))
    for name, first in (("last_20", 10), ("since_live", 0)):
        window = group["windows"][name]
        for step in (1, 2):
            chosen = [row for row in rows if row["step"] == step and row["origin"] >= session(first)]
            model = sum(abs(math.log(row["actual"] / row["forecast"])) for row in chosen) / len(chosen)
            naive = sum(abs(math.log(row["actual"] / row["naive"])) for row in chosen) / len(chosen)
            figures = window["per_step"][step - 1]
            assert figures["step"] == step and figures["scores"] == len(chosen) == 30 - first
            assert figures["ratio_to_naive"] == pytest.approx(model / naive, abs=1e-12)
            for level in LEVELS:
                covered = sum(row["inside"][level] for row in chosen) / len(chosen)
                assert figures["coverage"][level] == pytest.approx(covered, abs=1e-12)
                if step == 1:
                    assert window["coverage"][level]["coverage"] == pytest.approx(covered, abs=1e-12)
                    assert window["coverage"][level]["observations"] == len(chosen)
            if step == 1:
                # The headline is step 1's.
                assert window["ratio_to_naive"] == pytest.approx(model / naive, abs=1e-12)
                assert window["mean_abs_log_error"] == pytest.approx(model, abs=1e-12)
                assert window["naive_mean_abs_log_error"] == pytest.approx(naive, abs=1e-12)
        assert window["sessions"] == window["forecasts"] == 30 - first
        assert window["scores"] == 2 * (30 - first)


def test_direction_against_naive_beside_always_up() -> None:
    # Forecast up, actual up; forecast up, actual down; forecast down, actual down; no forecast move.
    rows = [
        score_row(0, actual=101.0, forecast=100.5),
        score_row(1, actual=99.0, forecast=100.5),
        score_row(2, actual=99.0, forecast=99.5),
        score_row(3, actual=101.0, forecast=100.0),
    ]
    direction = only_group(report(rows))["windows"]["since_live"]["direction"]
    assert direction == {"hit_rate": 2 / 3, "always_up_rate": 2 / 4, "scored": 3}


def test_windows_take_the_latest_sessions_not_the_latest_rows() -> None:
    # 70 sessions; the last 10 have three forecasts each (different windows, one origin).
    rows = [score_row(origin) for origin in range(60)] + [
        score_row(origin, forecast_id=f"f{origin}-{copy}") for origin in range(60, 70) for copy in range(3)
    ]
    windows = only_group(report(rows))["windows"]
    assert {name: windows[name]["sessions"] for name in windows} == {
        "last_20": 20,
        "last_60": 60,
        "last_250": 70,
        "since_live": 70,
    }
    assert windows["last_20"]["first_origin"] == session(50) and windows["last_20"]["last_origin"] == session(69)
    assert windows["last_20"]["forecasts"] == 10 + 30
    assert windows["last_60"]["first_origin"] == session(10)


def test_too_few_sessions_then_ok() -> None:
    rows = [score_row(origin) for origin in range(19)]
    group = only_group(report(rows))
    assert group["status"] == "insufficient_data"
    assert group["reasons"] == ["19 scored sessions; a status needs 20"]
    rows.append(score_row(19))
    answer = report(rows, served_version=1)
    assert answer["status"] == only_group(answer)["status"] == "ok"
    assert answer["status_of"] == {"version": 1, "served_as": "champion"}
    assert answer["thresholds"] == {
        "coverage_alpha": 0.01,
        "coverage_window": "last_250",
        "skill_alpha": 0.05,
        "skill_e_value": 20.0,
        "skill_window": "since_live",
        "min_scores": 20,
    }


def test_a_band_missing_30_percent_of_the_time_is_a_coverage_breach() -> None:
    # 90 % band: 3 misses in every 10 sessions; the others always inside.
    rows = [score_row(origin, inside={"80": 1, "90": int(origin % 10 >= 3), "95": 1}) for origin in range(300)]
    group = only_group(report(rows))
    assert group["status"] == "coverage_breach"
    coverage = group["windows"]["last_250"]["coverage"]["90"]
    assert coverage["observations"] == 250 and coverage["breaches"] == 75
    assert coverage["coverage"] == 0.7 and coverage["direction"] == "under"
    assert coverage["kupiec"]["p_value"] < 1e-10
    assert group["reasons"] == [
        f"the 90 % band covered 0.700 of 250 step-1 forecasts (last_250); Kupiec p = "
        f"{coverage['kupiec']['p_value']:.3g} < 0.01: under-covering"
    ]


def test_a_band_that_covers_too_much_is_reported_but_no_breach() -> None:
    rows = [score_row(origin, inside={"80": 1}) for origin in range(250)]
    group = only_group(report(rows))
    coverage = group["windows"]["last_250"]["coverage"]["80"]
    assert coverage["direction"] == "over" and coverage["kupiec"]["p_value"] < 0.01
    assert group["status"] == "ok"


def test_breach_clusters_show_in_christoffersen() -> None:
    # 10 % breaches, but in runs of five: the right rate, clustered.
    rows = [score_row(origin, inside={"90": int(origin % 50 >= 5)}) for origin in range(250)]
    coverage = only_group(report(rows))["windows"]["last_250"]["coverage"]["90"]
    assert coverage["coverage"] == 0.9 and coverage["kupiec"]["p_value"] > 0.5
    assert coverage["christoffersen"]["p_value"] < 1e-6


def test_a_model_much_worse_than_naive_loses_its_skill() -> None:
    # The naive forecast is right to a hair; the model misses by 2 % in 7 sessions of 10.
    rows = [
        score_row(origin, actual=100.01, naive=100.0, forecast=102.0 if origin % 10 < 7 else 100.01)
        for origin in range(300)
    ]
    answer = report(rows, served_version=1)
    group = only_group(answer)
    assert answer["status"] == group["status"] == "skill_lost"
    skill = group["skill_test"]
    assert skill["scores"] == 300 and skill["threshold"] == 20.0
    assert skill["e_value_worse_max"] >= 20.0 and skill["worse_since"] is not None
    assert skill["better_since"] is None
    assert group["windows"]["since_live"]["ratio_to_naive"] > 100
    assert group["windows"]["since_live"]["skill"]["worse_than_naive"] is True


def test_the_skill_alarm_stands_once_it_has_sounded() -> None:
    # Worse than naive for 40 sessions, then better for 60: the e-process crossed, so the version stays flagged.
    rows = [score_row(origin, actual=100.01, forecast=102.0) for origin in range(40)] + [
        score_row(origin, actual=100.01, forecast=100.01) for origin in range(40, 100)
    ]
    skill = only_group(report(rows))["skill_test"]
    assert skill["e_value_worse"] < 20.0 <= skill["e_value_worse_max"]
    assert skill["worse_since"] is not None and skill["worse_since"] <= session(41)
    assert only_group(report(rows))["status"] == "skill_lost"


def test_replays_have_their_own_block_and_never_move_live_figures() -> None:
    live = [score_row(origin) for origin in range(30)]
    replays = [
        score_row(origin, actual=150.0, inside={"80": 0, "90": 0, "95": 0}, replay=1, forecast_id=f"r{origin}")
        for origin in range(-400, -300)
    ]
    alone, mixed = only_group(report(live)), only_group(report(live + replays))
    assert mixed["windows"] == alone["windows"]
    assert mixed["live_sessions"] == 30 and mixed["first_origin"] == session(0)
    replay = mixed["replay"]["all_steps"]
    assert replay["scores"] == replay["forecasts"] == 100
    assert replay["coverage"] == {"80": 0.0, "90": 0.0, "95": 0.0}
    assert replay["ratio_to_naive"] == pytest.approx(math.log(150 / 100.5) / math.log(150 / 100), abs=1e-12)
    assert alone["replay"]["all_steps"]["scores"] == 0


def test_split_suspects_are_counted_and_left_out() -> None:
    rows = [score_row(origin) for origin in range(30)]
    split = score_row(30, actual=50.5, split_suspect=1, inside={"80": 0, "90": 0, "95": 0})
    answer, clean = report([*rows, split]), report(rows)
    assert answer["split_suspect"] == only_group(answer)["split_suspect"] == 1
    assert only_group(answer)["windows"] == only_group(clean)["windows"]
    # A group with nothing but split suspects still shows, with its count.
    alone = report([split])
    assert only_group(alone)["split_suspect"] == 1 and only_group(alone)["live_sessions"] == 0


def test_the_models_status_is_the_served_versions_unpinned_group() -> None:
    served = [score_row(origin, version=2) for origin in range(30)]
    pinned_bad = [
        score_row(origin, version=2, served_as="pinned", inside={"90": 0, "80": 0, "95": 0}) for origin in range(30)
    ]
    old_bad = [score_row(origin, version=1, inside={"90": 0, "80": 0, "95": 0}) for origin in range(30)]
    rows = served + pinned_bad + old_bad
    answer = report(rows, served_version=2)
    assert [(group["version"], group["served_as"], group["status"]) for group in answer["groups"]] == [
        (2, "champion", "ok"),
        (2, "pinned", "coverage_breach"),
        (1, "champion", "coverage_breach"),
    ]
    assert answer["status"] == "ok" and answer["status_of"] == {"version": 2, "served_as": "champion"}
    # Without a served version: the worst group.
    assert report(rows)["status"] == "coverage_breach"
    # A served version without scores yet.
    newer = report(rows, served_version=3)
    assert newer["status"] == "insufficient_data" and newer["status_of"] is None


def test_counts_of_kept_forecasts_and_unscorable_ones() -> None:
    answer = report([], counts={"kept": 12, "hits": 40, "undated": 3})
    assert answer["kept"] == {"kept": 12, "hits": 40, "undated": 3}
    assert answer["unscorable"] == 3
    assert answer["groups"] == [] and answer["status"] == "insufficient_data"
