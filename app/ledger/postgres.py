"""The ledger in the scaled-out mode's PostgreSQL: the same tables and SQL as SQLite (`app.ledger.store`).

Every API replica writes its served forecasts here, and scoring (a queue
job) reads them, so the monitoring answer is the same from any replica.
The tables are created by `python -m app migrate` (`app.jobs.schema`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg_pool
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from app.ledger.store import Cursor, LedgerStore
from training.errors import StockcastError


class LedgerUnavailableError(StockcastError):
    """The scaled-out mode's database cannot be reached right now."""

    status_code = 503


class PostgresLedger(LedgerStore):
    """The ledger through a small connection pool; one transaction per call."""

    placeholder = "%s"

    def __init__(self, database_url: str, pool_size: int = 2) -> None:
        self.pool: ConnectionPool[Any] = ConnectionPool(
            database_url,
            min_size=1,
            max_size=pool_size,
            kwargs={"row_factory": dict_row},
            check=ConnectionPool.check_connection,
            open=True,
        )

    @contextmanager
    def transaction(self) -> Iterator[Cursor]:
        try:
            with (
                self.pool.connection(timeout=10) as connection,
                connection.transaction(),
                connection.cursor() as cursor,
            ):
                yield cursor  # type: ignore[misc]
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as error:
            # A route reading the ledger answers 503 with the reason; the writer counts the loss and goes on.
            raise LedgerUnavailableError(
                f"the forecast ledger's database is unreachable ({error}); retry later"
            ) from None

    def close(self) -> None:
        self.pool.close()


__all__ = ["LedgerUnavailableError", "PostgresLedger"]
