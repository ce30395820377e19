"""Trading calendars: the sessions a dataset should hold between two dates."""

from __future__ import annotations

import datetime as dt

from training.calendars import ALWAYS_OPEN, sessions_between


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
