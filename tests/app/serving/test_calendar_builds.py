"""A request whose dates fall in a decade no one asked for yet builds it in a thread, not on the event loop."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from app.serving.forecasting import build_calendar
from training import calendars


def test_a_new_decade_is_built_once_and_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    # Finding 14: a new decade's sessions (seconds of holiday rules) were built on the event loop.
    builds: list[tuple[str, int, int]] = []

    def build(name: str, decade: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        builds.append((name, decade, threading.get_ident()))
        start = np.datetime64(f"{decade}-01-01")
        days = np.arange(start, start + np.timedelta64(4000, "D"))
        # Sessions, then their opens and closes (as instants), as calendars._build gives them.
        return days, days.astype("datetime64[s]"), days.astype("datetime64[s]")

    monkeypatch.setattr(calendars, "_build", build)
    monkeypatch.setattr(calendars, "_SESSIONS", {})
    served: Any = SimpleNamespace(metadata={"calendar": "XNYS"})
    days = [dt.date(1995, 3, 1), dt.date(1997, 6, 2), None]

    async def answer() -> int:
        await build_calendar(served, days)
        return threading.get_ident()

    loop_thread = asyncio.run(answer())
    assert [(name, decade) for name, decade, _ in builds] == [("XNYS", 1990)]
    assert builds[0][2] != loop_thread
    assert calendars.is_built("XNYS", dt.date(1999, 12, 31))
    asyncio.run(answer())
    assert len(builds) == 1  # kept: the next request only looks up
    assert calendars.sessions_after(dt.date(1995, 3, 1), 2, "XNYS") == [dt.date(1995, 3, 2), dt.date(1995, 3, 3)]
