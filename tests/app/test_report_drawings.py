"""Reports missing for many versions are drawn one process at a time, not all at once."""

from __future__ import annotations

import asyncio
from pathlib import Path

from app.reports import VersionReports
from training.store import ModelStore


def test_requests_for_seven_missing_reports_draw_one_at_a_time(tmp_path: Path) -> None:
    # Finding 13: seven report.png requests started seven drawing processes at once (0.9 -> 5.6 GiB).
    reports = VersionReports(ModelStore(tmp_path / "models"), tmp_path / "reports")
    running, most = 0, 0

    async def draw(name: str, version: int) -> Path:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.01)
        running -= 1
        return reports.cached_path(name, version)

    reports._draw_in_child = draw  # type: ignore[method-assign]

    async def ask_all() -> list[Path]:
        return await asyncio.gather(*(reports.path("tiny", version) for version in range(1, 8)))

    drawn = asyncio.run(ask_all())
    assert drawn == [reports.cached_path("tiny", version) for version in range(1, 8)]
    assert most == 1
