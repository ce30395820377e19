"""Trading calendars: the sessions a dataset should hold between two dates."""

from __future__ import annotations

import datetime as dt

from training.calendars import ALWAYS_OPEN, session_closes, sessions_between


def test_sessions_between_skip_weekends_and_holidays() -> None:
    # 2024-12-25 (Christmas) and the weekend of 2024-12-28/29 are not XNYS sessions.
    days = sessions_between(dt.date(2024, 12, 23), dt.date(2024, 12, 31))
    assert [str(day) for day in days] == ["2024-12-24", "2024-12-26", "2024-12-27", "2024-12-30", "2024-12-31"]


def test_sessions_between_cross_a_decade() -> None:
    days = sessions_between(dt.date(2019, 12, 30), dt.date(2020, 1, 3))
    assert [str(day) for day in days] == ["2019-12-31", "2020-01-02", "2020-01-03"]


def test_sessions_between_on_a_market_that_never_closes() -> None:
    days = sessions_between(dt.date(2024, 12, 30), dt.date(2025, 1, 2), ALWAYS_OPEN)
    assert [str(day) for day in days] == ["2024-12-31", "2025-01-01", "2025-01-02"]
    assert sessions_between(dt.date(2025, 1, 2), dt.date(2025, 1, 2)) == []


def test_session_closes_hold_early_closes_and_skip_holidays() -> None:
    closes = session_closes(dt.date(2024, 11, 26), dt.date(2024, 12, 2))
    # Thanksgiving (2024-11-28) is closed; the day after closes at 13:00 New York time (18:00 UTC).
    assert [str(close) for close in closes] == ["2024-11-27T21:00:00", "2024-11-29T18:00:00", "2024-12-02T21:00:00"]
    assert [str(close) for close in session_closes(dt.date(2024, 11, 26), dt.date(2024, 11, 27), ALWAYS_OPEN)] == [
        "2024-11-28T00:00:00"
    ]


def test_is_open_between_a_sessions_open_and_close_only() -> None:
    import datetime as dt

    from training.calendars import is_open

    new_york = dt.timezone(dt.timedelta(hours=-5))
    assert is_open(dt.datetime(2024, 12, 2, 10, 0, tzinfo=new_york))
    assert not is_open(dt.datetime(2024, 12, 2, 9, 0, tzinfo=new_york))
    assert not is_open(dt.datetime(2024, 12, 2, 16, 30, tzinfo=new_york))
    assert not is_open(dt.datetime(2024, 12, 25, 11, 0, tzinfo=new_york))  # a holiday
    assert not is_open(dt.datetime(2024, 11, 29, 14, 0, tzinfo=new_york))  # after the early close
    assert not is_open(dt.datetime(2024, 12, 2, 12, 0, tzinfo=dt.UTC), "24/7")
