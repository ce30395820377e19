"""Version report PNGs for GET /models/{name}/versions/{v}/report.png, without Keras in the API process.

Drawing a report recomputes the version's test-period forecasts, so it needs
Keras, which the API process never imports. Training draws it into the
version's folder (`training.version_report`), and the API serves that file.
A version without one gets its report drawn once, in a spawned child
process, into `<data_dir>/reports/<name>/<version>.png`, served from then on;
concurrent requests for the same missing report wait for one drawing.
See docs/design.md, "Layout: which process runs what".
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from app.core.process import die_with_parent
from training.errors import StockcastError
from training.store import REPORT_FILE, ModelStore

logger = logging.getLogger("stockcast.reports")


class ReportFailedError(StockcastError):
    """The child process drawing a report died."""

    status_code = 500


class VersionReports:
    """Finds a version's report file, drawing it once in a child process when there is none."""

    def __init__(self, store: ModelStore, cache_dir: Path, max_drawings: int = 1) -> None:
        self.store = store
        self.cache_dir = cache_dir
        self._context = multiprocessing.get_context("spawn")
        self._drawing: dict[tuple[str, int], asyncio.Task[Path]] = {}
        # Each drawing is a process importing TensorFlow: requests for many versions queue here
        # instead of starting a process each.
        self._drawings = asyncio.Semaphore(max_drawings)

    def cached_path(self, name: str, version: int) -> Path:
        """Where the API keeps a report it had to draw itself."""
        return self.cache_dir / name / f"{version}.png"

    def existing(self, name: str, version: int) -> Path | None:
        """The report drawn at training time, or the one drawn on an earlier request; None if neither exists."""
        for path in (self.store.version_dir(name, version) / REPORT_FILE, self.cached_path(name, version)):
            if path.is_file():
                return path
        return None

    async def path(self, name: str, version: int) -> Path:
        """The report's file; drawn first, in a child process, if it does not exist yet."""
        found = await asyncio.to_thread(self.existing, name, version)
        if found is not None:
            return found
        key = (name, version)
        task = self._drawing.get(key)
        if task is None:
            task = asyncio.create_task(self._draw(name, version), name=f"report-{name}-{version}")
            self._drawing[key] = task
            task.add_done_callback(lambda _: self._drawing.pop(key, None))
        # A client that goes away does not cancel the drawing others wait for.
        return await asyncio.shield(task)

    async def _draw(self, name: str, version: int) -> Path:
        async with self._drawings:
            return await self._draw_in_child(name, version)

    async def _draw_in_child(self, name: str, version: int) -> Path:
        logger.info("%s v%s has no report yet; drawing it in a child process", name, version)
        # One child per drawing, gone when it is done: TensorFlow would hold
        # hundreds of MiB in an idle pool for a request that comes once per version.
        pool = ProcessPoolExecutor(max_workers=1, mp_context=self._context, initializer=die_with_parent)
        try:
            future = pool.submit(
                _draw_in_child, str(self.store.root), name, version, str(self.cached_path(name, version))
            )
            drawn: str = await asyncio.wrap_future(future)
            return Path(drawn)
        except BrokenProcessPool as error:
            raise ReportFailedError(f"{name} v{version}: the process drawing the report died; retry") from error
        finally:
            await asyncio.to_thread(pool.shutdown)


def _draw_in_child(models_dir: str, name: str, version: int, target: str) -> str:
    """Runs in the child process: draw the report (Keras is imported here) and write it to `target`."""
    from training.version_report import write_version_report

    return str(write_version_report(ModelStore(models_dir), name, version, target=Path(target)))


__all__ = ["ReportFailedError", "VersionReports"]
