"""When a schedule's runs fall due: slots on the model's exchange calendar, pure functions of the clock.

A slot is a session's close (UTC, early closes included) plus
`after_close_minutes`; the grid takes every `every_sessions`-th session,
counted from the first slot at or after the schedule's anchor (when it was
set). A tick at time `now` fires at most one slot: the latest due one, so
runs missed while nothing ticked coalesce into one. See docs/design.md,
"Schedules".
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from app.schedules.spec import ScheduleWhen
from training.calendars import session_closes

# A session's close may fall on the next UTC day; a slot up to a day after it.
_LOOKBACK = dt.timedelta(days=3)


@dataclass(frozen=True)
class DueSlot:
    """The slot a tick fires, and how many slots it stands for (1, or more when runs were missed)."""

    slot: dt.datetime
    slots: int


def _utc64(moment: dt.datetime) -> np.datetime64:
    return np.datetime64(moment.astimezone(dt.UTC).replace(tzinfo=None), "s")


def _aware(moment: np.datetime64) -> dt.datetime:
    return dt.datetime.fromisoformat(str(moment.astype("datetime64[s]"))).replace(tzinfo=dt.UTC)


def slot_grid(when: ScheduleWhen, calendar: str, anchor: dt.datetime, through: dt.datetime) -> np.ndarray:
    """Every slot from `anchor` up to and including `through`, as UTC datetime64[s], oldest first."""
    if through < anchor:
        return np.array([], dtype="datetime64[s]")
    closes = session_closes((anchor - _LOOKBACK).date(), through.date(), calendar)
    slots = closes + np.timedelta64(when.after_close_minutes, "m")
    slots = slots[slots >= _utc64(anchor)]
    return slots[:: when.every_sessions][slots[:: when.every_sessions] <= _utc64(through)]


def due_slot(
    when: ScheduleWhen, calendar: str, anchor: dt.datetime, last_slot: dt.datetime | None, now: dt.datetime
) -> DueSlot | None:
    """The slot a tick at `now` fires: the latest one at or before `now` and after `last_slot`; None if none is due."""
    grid = slot_grid(when, calendar, anchor, now)
    if last_slot is not None:
        grid = grid[grid > _utc64(last_slot)]
    if len(grid) == 0:
        return None
    return DueSlot(_aware(grid[-1]), len(grid))


def next_slot(
    when: ScheduleWhen, calendar: str, anchor: dt.datetime, last_slot: dt.datetime | None, now: dt.datetime
) -> dt.datetime:
    """The first slot after `now` (and after `last_slot`): when the schedule runs next, unless one is due now."""
    after = max(now, last_slot) if last_slot is not None else now
    # Sessions are at most a few days apart, holidays included; look further until the grid reaches past `after`.
    horizon = dt.timedelta(days=7 + 2 * when.every_sessions)
    while True:
        grid = slot_grid(when, calendar, anchor, after + horizon)
        later = grid[grid > _utc64(after)]
        if len(later):
            return _aware(later[0])
        horizon *= 2
