"""Trading calendars: which days a forecast's steps fall on.

A step is one trading session of the dataset's exchange, so forecast dates
skip weekends and holidays (on XNYS the session after 2024-12-24 is
2024-12-26). Calendars come from `exchange_calendars`, whose holiday rules
are code (works offline); "24/7" (crypto) is every calendar day. Sessions
and their closing times (UTC, early closes included) are computed once per
calendar and decade (off a server's event loop), then binary-searched.
See docs/design.md, "Names, baselines and exchange calendars".
"""

from __future__ import annotations

import datetime as dt
import functools
import threading
from typing import Any

import numpy as np

from training.errors import ConfigError

DEFAULT_CALENDAR = "XNYS"
ALWAYS_OPEN = "24/7"


@functools.cache
def known_calendars() -> tuple[str, ...]:
    """Every calendar name a model may name."""
    import exchange_calendars

    return tuple(sorted(set(exchange_calendars.get_calendar_names(include_aliases=True)) | {ALWAYS_OPEN}))


def calendar_of(metadata: dict[str, Any]) -> str:
    """The calendar a version's forecast dates follow (versions from before the setting: the default)."""
    return str(metadata.get("calendar") or DEFAULT_CALENDAR)


def check_calendar(name: str) -> str:
    """The name if it is a known calendar; ConfigError naming a few known ones otherwise."""
    if name in (ALWAYS_OPEN, DEFAULT_CALENDAR):
        return name
    if name not in known_calendars():
        raise ConfigError(
            f"unknown trading calendar '{name}'; use an exchange_calendars code such as "
            f"XNYS, XNAS, XLON, XKRX, XTKS, or '{ALWAYS_OPEN}' for markets that never close"
        )
    return name


# Built decades by (calendar, first year); built one at a time, under this lock, so a
# burst of requests for a new decade builds it once. Each session's close (UTC) beside it.
_SESSIONS: dict[tuple[str, int], np.ndarray] = {}
_CLOSES: dict[tuple[str, int], np.ndarray] = {}
_OPENS: dict[tuple[str, int], np.ndarray] = {}
_BUILDING = threading.Lock()


def decade_of(day: dt.date) -> int:
    """The first year of the decade `day` falls in: sessions are built and kept a decade at a time."""
    return day.year // 10 * 10


def is_built(name: str, day: dt.date) -> bool:
    """Whether `sessions_after(day, ...)` on calendar `name` is a lookup, with nothing to build first."""
    return name == ALWAYS_OPEN or (name, decade_of(day)) in _SESSIONS


def _sessions(name: str, decade: int) -> np.ndarray:
    """The calendar's sessions from the decade's first year to a year past its last, as sorted datetime64[D].

    Built a decade at a time and kept: the holiday rules cost seconds per
    decade (more for lunar calendars), so a server builds a new decade off
    its event loop (`is_built` tells when one is needed).
    """
    sessions = _SESSIONS.get((name, decade))
    if sessions is not None:
        return sessions
    with _BUILDING:
        sessions = _SESSIONS.get((name, decade))
        if sessions is None:
            sessions, _OPENS[(name, decade)], _CLOSES[(name, decade)] = _build(name, decade)
            _SESSIONS[(name, decade)] = sessions
    return sessions


def _closes(name: str, decade: int) -> np.ndarray:
    """The closing time (UTC, datetime64[s]) of each session `_sessions(name, decade)` holds, in the same order."""
    _sessions(name, decade)
    return _CLOSES[(name, decade)]


def _opens(name: str, decade: int) -> np.ndarray:
    """The opening time (UTC, datetime64[s]) of each session `_sessions(name, decade)` holds, in the same order."""
    _sessions(name, decade)
    return _OPENS[(name, decade)]


def _build(name: str, decade: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import exchange_calendars

    start, end = f"{decade}-01-01", f"{decade + 10}-12-31"
    try:
        calendar = exchange_calendars.get_calendar(name, start=start, end=end)
    except (ValueError, exchange_calendars.errors.CalendarError) as error:
        raise ConfigError(f"the {name} calendar has no sessions for {decade}-{decade + 10}: {error}") from error
    sessions = np.asarray(calendar.sessions.values.astype("datetime64[D]"))
    opens = np.asarray(calendar.opens.values.astype("datetime64[s]"))
    closes = np.asarray(calendar.closes.values.astype("datetime64[s]"))
    return sessions, opens, closes


def sessions_after(last: dt.date, horizon: int, name: str = DEFAULT_CALENDAR) -> list[dt.date]:
    """The next `horizon` sessions of calendar `name` after the date `last`."""
    day = np.datetime64(last, "D")
    if name == ALWAYS_OPEN:
        return [(day + np.timedelta64(step, "D")).astype(dt.date) for step in range(1, horizon + 1)]
    sessions = _sessions(name, decade_of(last))
    first = int(np.searchsorted(sessions, day, side="right"))
    if first + horizon > len(sessions):
        raise ConfigError(f"a {horizon}-step forecast from {last} runs past the {name} sessions known to this service")
    return [value.astype(dt.date) for value in sessions[first : first + horizon]]


def sessions_between(after: dt.date, through: dt.date, name: str = DEFAULT_CALENDAR) -> list[dt.date]:
    """The sessions of calendar `name` after the date `after`, up to and including `through`."""
    first, last = np.datetime64(after, "D"), np.datetime64(through, "D")
    if last <= first:
        return []
    if name == ALWAYS_OPEN:
        return [day.astype(dt.date) for day in np.arange(first + 1, last + 1)]
    # Built decades overlap by a year: np.unique merges them.
    decades = range(decade_of(after), decade_of(through) + 1, 10)
    sessions = np.unique(np.concatenate([_sessions(name, decade) for decade in decades]))
    chosen = sessions[(sessions > first) & (sessions <= last)]
    return [day.astype(dt.date) for day in chosen]


def is_session(days: np.ndarray, name: str = DEFAULT_CALENDAR) -> np.ndarray:
    """Whether each day (datetime64[D]) is a session of calendar `name`; every day is one on 24/7."""
    days = np.asarray(days, dtype="datetime64[D]")
    if name == ALWAYS_OPEN or days.size == 0:
        return np.ones(days.shape, dtype=bool)
    first, last = days.min().astype(dt.date), days.max().astype(dt.date)
    decades = range(decade_of(first), decade_of(last) + 1, 10)
    sessions = np.unique(np.concatenate([_sessions(name, decade) for decade in decades]))
    return np.isin(days, sessions)


def session_closes(after: dt.date, through: dt.date, name: str = DEFAULT_CALENDAR) -> np.ndarray:
    """When each session of calendar `name` after `after`, up to and including `through`, closes.

    UTC as datetime64[s], early closes included (XNYS closes at 18:00 UTC on
    2024-11-29); a market that never closes ends each day at 24:00 UTC.
    """
    first, last = np.datetime64(after, "D"), np.datetime64(through, "D")
    if last <= first:
        return np.array([], dtype="datetime64[s]")
    if name == ALWAYS_OPEN:
        return (np.arange(first + 1, last + 1) + np.timedelta64(1, "D")).astype("datetime64[s]")
    decades = range(decade_of(after), decade_of(through) + 1, 10)
    sessions = np.concatenate([_sessions(name, decade) for decade in decades])
    closes = np.concatenate([_closes(name, decade) for decade in decades])
    # Built decades overlap by a year: keep each session once.
    sessions, unique = np.unique(sessions, return_index=True)
    closes = closes[unique]
    return closes[(sessions > first) & (sessions <= last)]


def is_open(at: dt.datetime, name: str = DEFAULT_CALENDAR) -> bool:
    """Whether calendar `name` is in a session at the aware time `at` (from its open to its close).

    A market that never closes has no time between sessions: False, so
    whatever waits for one (a promotion) is not held back for ever.
    A lunch break counts as open.
    """
    if at.tzinfo is None:
        raise ValueError(f"is_open needs an aware time, got {at}")
    if name == ALWAYS_OPEN:
        return False
    utc = at.astimezone(dt.UTC)
    moment = np.datetime64(utc.replace(tzinfo=None), "s")
    decade = decade_of(utc.date())
    closes = _closes(name, decade)
    # The first session closing after the moment: open now when it has opened already.
    index = int(np.searchsorted(closes, moment, side="right"))
    return index < len(closes) and bool(_opens(name, decade)[index] <= moment)
