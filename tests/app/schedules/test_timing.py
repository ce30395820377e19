"""Slots on the exchange calendar: after each close (early closes included), every n-th session, coalesced."""

from __future__ import annotations

import datetime as dt

from app.schedules.spec import ScheduleWhen
from app.schedules.timing import DueSlot, due_slot, next_slot, slot_grid

# A Monday before Thanksgiving: XNYS is closed on 2024-11-28 and closes at 13:00 New York time on 2024-11-29.
ANCHOR = dt.datetime(2024, 11, 25, 12, tzinfo=dt.UTC)


def at(text: str) -> dt.datetime:
    """A UTC moment from 'YYYY-MM-DD HH:MM'."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


def iso(grid: object) -> list[str]:
    return [str(moment) for moment in grid]  # type: ignore[attr-defined]


def test_slots_follow_the_closes_of_the_calendar() -> None:
    grid = slot_grid(ScheduleWhen(after_close_minutes=45), "XNYS", ANCHOR, at("2024-12-02 23:00"))
    assert iso(grid) == [
        "2024-11-25T21:45:00",
        "2024-11-26T21:45:00",
        "2024-11-27T21:45:00",
        "2024-11-29T18:45:00",
        "2024-12-02T21:45:00",
    ]


def test_every_n_sessions_counts_from_the_anchor() -> None:
    grid = slot_grid(ScheduleWhen(after_close_minutes=0, every_sessions=2), "XNYS", ANCHOR, at("2024-12-06 23:00"))
    assert iso(grid) == [
        "2024-11-25T21:00:00",
        "2024-11-27T21:00:00",
        "2024-12-02T21:00:00",
        "2024-12-04T21:00:00",
        "2024-12-06T21:00:00",
    ]


def test_a_slot_before_the_anchor_is_not_due() -> None:
    late = at("2024-11-25 22:00")
    assert iso(slot_grid(ScheduleWhen(), "XNYS", late, at("2024-11-26 22:00"))) == ["2024-11-26T21:45:00"]


def test_the_due_slot_is_the_latest_and_counts_the_missed_ones() -> None:
    when = ScheduleWhen()
    assert due_slot(when, "XNYS", ANCHOR, None, at("2024-11-25 21:44")) is None
    assert due_slot(when, "XNYS", ANCHOR, None, at("2024-11-25 21:45")) == DueSlot(at("2024-11-25 21:45"), 1)
    assert due_slot(when, "XNYS", ANCHOR, at("2024-11-25 21:45"), at("2024-11-26 09:00")) is None
    # Down from Monday's slot to Friday: Tuesday, Wednesday and Friday's early close coalesce into one.
    assert due_slot(when, "XNYS", ANCHOR, at("2024-11-25 21:45"), at("2024-11-29 20:00")) == DueSlot(
        at("2024-11-29 18:45"), 3
    )


def test_the_next_slot_skips_holidays_and_weekends() -> None:
    when = ScheduleWhen()
    assert next_slot(when, "XNYS", ANCHOR, at("2024-11-27 21:45"), at("2024-11-27 22:00")) == at("2024-11-29 18:45")
    assert next_slot(when, "XNYS", ANCHOR, at("2024-11-29 18:45"), at("2024-11-29 19:00")) == at("2024-12-02 21:45")
    # The 21st session from the anchor is Christmas Eve, an early close.
    assert next_slot(ScheduleWhen(every_sessions=20), "XNYS", ANCHOR, None, at("2024-11-26 00:00")) == at(
        "2024-12-24 18:45"
    )


def test_a_market_that_never_closes_has_a_slot_every_day() -> None:
    grid = slot_grid(ScheduleWhen(after_close_minutes=30), "24/7", ANCHOR, at("2024-11-28 01:00"))
    assert iso(grid) == ["2024-11-26T00:30:00", "2024-11-27T00:30:00", "2024-11-28T00:30:00"]
