"""The ledger in the scaled-out mode's PostgreSQL: the same tables and SQL as SQLite (`app.ledger.store`).

Every API replica writes its served forecasts here, and scoring (a queue
job) reads them, so the monitoring answer is the same from any replica.
The tables are created by `python -m app migrate` (`app.jobs.schema`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from app.ledger.store import Cursor, LedgerStore


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
        with self.pool.connection(timeout=10) as connection, connection.transaction(), connection.cursor() as cursor:
            yield cursor  # type: ignore[misc]

    def close(self) -> None:
        self.pool.close()


__all__ = ["PostgresLedger"]
