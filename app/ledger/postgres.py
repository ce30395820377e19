"""The ledger in the scaled-out mode's PostgreSQL: the same tables and SQL as SQLite (`app.ledger.store`).

Every API replica writes its served forecasts here, and scoring (a queue
job) reads them, so the monitoring answer is the same from any replica.
The tables are created by `python -m app migrate` (`app.jobs.schema`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from app.core.databases import postgres_connection, postgres_pool
from app.ledger.store import Cursor, LedgerStore
from training.errors import StockcastError


class LedgerUnavailableError(StockcastError):
    """The scaled-out mode's database cannot be reached right now."""

    status_code = 503


class PostgresLedger(LedgerStore):
    """The ledger through a small connection pool; one transaction per call."""

    placeholder = "%s"

    def __init__(self, database_url: str, pool_size: int = 2) -> None:
        self.pool = postgres_pool(database_url, pool_size, "stockcast-ledger")

    @contextmanager
    def transaction(self) -> Iterator[Cursor]:
        # A route reading the ledger answers 503 with the reason; the writer counts the loss and goes on.
        with (
            postgres_connection(self.pool, LedgerUnavailableError, "the forecast ledger's database") as connection,
            connection.transaction(),
            connection.cursor() as cursor,
        ):
            yield cursor

    def close(self) -> None:
        self.pool.close()


__all__ = ["LedgerUnavailableError", "PostgresLedger"]
