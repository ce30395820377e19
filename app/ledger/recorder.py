"""The ledger's writer: requests hand their forecasts over, a background task writes them in batches.

`keep` is all a request does: append a reference to a bounded deque (no
copy, no I/O, no await). When the deque holds `queue_size` forecasts, new
ones are dropped and counted, so a slow or unreachable database never
delays or fails an answer. The flush task turns the hand-offs into rows
and writes them every `flush_seconds` in a thread; a crash loses at most
one interval's forecasts. See docs/ledger.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections import deque
from collections.abc import Callable

from app.ledger.records import Served, iso_time, rows_of
from app.ledger.store import LedgerStore

logger = logging.getLogger("stockcast.ledger")
# Old forecasts are looked for this often: deleting them is no hurry.
RETENTION_EVERY_SECONDS = 3600.0


class Ledger:
    """Keeps served forecasts: `keep` on the request's path, `flush` (or the task `start` runs) writes them."""

    def __init__(
        self,
        store: LedgerStore,
        *,
        queue_size: int,
        flush_seconds: float,
        data_through: Callable[[str], str | None] = lambda _dataset: None,
        retention_days: float | None = None,
    ) -> None:
        self.store = store
        self.queue_size = queue_size
        self.flush_seconds = flush_seconds
        self.data_through = data_through
        self.retention_days = retention_days
        self.dropped = 0
        self.written = 0
        self._pending: deque[Served] = deque()
        self._waiting = 0
        self._task: asyncio.Task[None] | None = None

    def keep(self, served: Served) -> None:
        """Hand one answer's forecasts over; dropped (and counted) when the queue is full."""
        count = len(served.ids)
        if self._waiting + count > self.queue_size:
            self.dropped += count
            return
        self._waiting += count
        self._pending.append(served)

    async def flush(self) -> int:
        """Write what was handed over so far; the number of forecasts written (hits of kept ones included)."""
        if not self._pending:
            return 0
        batch = list(self._pending)
        self._pending.clear()
        self._waiting = 0
        try:
            written = await asyncio.to_thread(self._write, batch)
        except Exception:
            # The database is down or full: these forecasts are lost (answered, never scored), counted.
            self.dropped += sum(len(served.ids) for served in batch)
            logger.exception("ledger: writing %d answers failed; their forecasts are dropped", len(batch))
            return 0
        self.written += written
        return written

    def _write(self, batch: list[Served]) -> int:
        # Desks ask for the same forecast again and again: each distinct one is built once, its repeats
        # become hits, and only the rows (not the repeats) cost any work.
        firsts: dict[str, tuple[int, int]] = {}
        repeats: dict[str, tuple[int, float]] = {}
        for at, served in enumerate(batch):
            for index, forecast_id in enumerate(served.ids):
                if forecast_id not in firsts:
                    firsts[forecast_id] = (at, index)
                else:
                    hits, _ = repeats.get(forecast_id, (0, 0.0))
                    repeats[forecast_id] = (hits + 1, served.served_at)
        wanted: dict[int, list[int]] = {}
        for at, index in firsts.values():
            wanted.setdefault(at, []).append(index)
        rows = [row for at, indexes in wanted.items() for row in rows_of(batch[at], indexes)]
        through: dict[str | None, str | None] = {}
        for row in rows:
            dataset = row["dataset"]
            if dataset not in through:
                through[dataset] = self.data_through(dataset) if dataset else None
            row["data_through"] = through[dataset]
            again = repeats.get(row["forecast_id"])
            if again is not None:
                row["hits"] = 1 + again[0]
                row["last_served_at"] = iso_time(again[1])
        self.store.add_forecasts(rows)
        return sum(len(served.ids) for served in batch)

    async def _run(self) -> None:
        forgotten = 0.0
        while True:
            await asyncio.sleep(self.flush_seconds)
            await self.flush()
            if self.retention_days is not None and time.monotonic() - forgotten > RETENTION_EVERY_SECONDS:
                forgotten = time.monotonic()
                await self.forget_old()

    async def forget_old(self) -> int:
        """Delete kept forecasts older than the retention; their scores stay. How many went."""
        if self.retention_days is None:
            return 0
        cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(days=self.retention_days)
        try:
            return await asyncio.to_thread(self.store.forget_before, cutoff.isoformat(timespec="microseconds"))
        except Exception:
            logger.exception("ledger: deleting forecasts past the retention failed; trying again later")
            return 0

    def start(self) -> None:
        """Start the flush task on the running loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="ledger-flush")

    async def stop(self) -> None:
        """Stop the task, write what is left, close the store."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()
        self.store.close()


__all__ = ["Ledger"]
