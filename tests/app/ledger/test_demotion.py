"""When the monitor demotes a champion, from hand-built score rows: N breached sessions in a row, since it was set."""

from __future__ import annotations

from typing import Any

from app.ledger.demotion import champion_since, demotion_due, demotions_of
from tests.helpers import score_row, session

THRESHOLDS = {"coverage_alpha": 0.01, "skill_alpha": 0.05, "min_scores": 5}
MISS = {"80": 0, "90": 0, "95": 0}


def rows(
    count: int, missed: set[int], scored_at: str = "2024-12-31T00:00:00+00:00", miss: dict[str, int] = MISS
) -> list[dict[str, Any]]:
    """`count` sessions of step-1 scores of v1 as champion, beating naive (no skill alarm); `miss` in `missed`."""
    return [
        {**score_row(origin, inside=miss if origin in missed else None), "scored_at": scored_at}
        for origin in range(count)
    ]


def test_a_breach_in_each_of_the_last_n_sessions_demotes() -> None:
    demotion = demotion_due(rows(8, set(range(8))), champion=1, since=None, sessions=3, **THRESHOLDS)
    assert demotion is not None
    assert (demotion.version, demotion.status) == (1, "coverage_breach")
    assert demotion.figures["sessions"] == [session(5), session(6), session(7)]
    assert demotion.figures["statuses"] == ["coverage_breach"] * 3
    assert demotion.figures["coverage"]["90"]["coverage"] == 0.0
    assert demotion.reason.startswith(
        f"demoted by the monitor: status coverage_breach at each of the last 3 scored sessions ({session(5)} to"
        f" {session(7)}); the 80 % band covered 0.000 of 8 step-1 forecasts (last_250); Kupiec p = "
    )


def test_a_breach_not_yet_n_sessions_long_keeps_the_champion() -> None:
    # Sessions 0-3 are 'insufficient_data' (min_scores 5): the breach is two sessions old at session 5.
    assert demotion_due(rows(6, set(range(6))), champion=1, since=None, sessions=3, **THRESHOLDS) is None
    assert demotion_due(rows(7, set(range(7))), champion=1, since=None, sessions=3, **THRESHOLDS) is not None


def test_one_good_session_among_the_last_n_keeps_the_champion() -> None:
    # The 80 % band missed the first 8 sessions, then covered 42: back within Kupiec's tolerance by the end.
    scores = rows(50, set(range(8)), miss={"80": 0, "90": 1, "95": 1})
    assert demotion_due(scores[:10], champion=1, since=None, sessions=3, **THRESHOLDS) is not None
    assert demotion_due(scores, champion=1, since=None, sessions=3, **THRESHOLDS) is None


def test_only_sessions_scored_since_the_champion_was_set_count() -> None:
    before, after = "2024-06-01T00:00:00+00:00", "2024-06-03T00:00:00+00:00"
    scores = rows(8, set(range(8)), scored_at=before)
    assert demotion_due(scores, champion=1, since="2024-06-02T00:00:00+00:00", sessions=3, **THRESHOLDS) is None
    scores[-3:] = [{**row, "scored_at": after} for row in scores[-3:]]
    assert demotion_due(scores, champion=1, since="2024-06-02T00:00:00+00:00", sessions=3, **THRESHOLDS) is not None


def test_another_versions_scores_and_zero_sessions_demote_nothing() -> None:
    assert demotion_due(rows(8, set(range(8))), champion=2, since=None, sessions=3, **THRESHOLDS) is None
    assert demotion_due(rows(8, set(range(8))), champion=1, since=None, sessions=0, **THRESHOLDS) is None


def test_the_alias_log_says_since_when_and_how_often() -> None:
    log = [
        {"alias": "champion", "from": None, "to": 1, "at": "t1"},
        {"alias": "staging", "from": None, "to": 1, "at": "t2"},
        {"alias": "champion", "from": 1, "to": None, "at": "t3", "by": "monitor"},
        {"alias": "champion", "from": None, "to": 1, "at": "t4", "by": "ops"},
    ]
    assert champion_since(log, 1) == "t4" and champion_since(log, 2) is None
    assert demotions_of(log) == 1
