"""Connections for the small stores beside the job records: SQLite files and PostgreSQL pools.

The ledger and the schedules keep their rows in SQLite (embedded mode) or
the scaled-out mode's PostgreSQL with the same SQL; this is how each opens
a connection and runs one transaction, written once.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from training.errors import StockcastError


def create_sqlite(path: Path, schema: str) -> None:
    """Create the file's folder and tables (WAL: readers never wait for a writer)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with closing(connect_sqlite(path)) as connection:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.executescript(schema)


def connect_sqlite(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode whose rows read by column name."""
    connection = sqlite3.connect(path, timeout=30, isolation_level=None)
    connection.row_factory = sqlite3.Row
    return connection


@contextmanager
def sqlite_transaction(path: Path) -> Iterator[sqlite3.Cursor]:
    """A cursor in one write transaction (taken at once, so two writers queue instead of failing later)."""
    with closing(connect_sqlite(path)) as connection:
        cursor = connection.cursor()
        cursor.execute("BEGIN IMMEDIATE")
        try:
            yield cursor
        except BaseException:
            connection.rollback()
            raise
        connection.commit()


def postgres_pool(database_url: str, size: int, name: str) -> Any:
    """A small pool whose connections are checked when taken (a database restart leaves none broken)."""
    from psycopg.rows import dict_row
    from psycopg_pool import ConnectionPool

    return ConnectionPool(
        database_url,
        min_size=1,
        max_size=size,
        kwargs={"row_factory": dict_row},
        check=ConnectionPool.check_connection,
        open=True,
        name=name,
    )


@contextmanager
def postgres_connection(pool: Any, unavailable: type[StockcastError], what: str) -> Iterator[Any]:
    """A connection from `pool`; an unreachable database raises `unavailable` (a 503) naming `what`."""
    import psycopg
    import psycopg_pool

    try:
        with pool.connection(timeout=10) as connection:
            yield connection
    except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as error:
        raise unavailable(f"{what} is unreachable ({error}); retry later") from None


class SqlStore:
    """Rows read and written with one set of SQL: `?` marks a value, rewritten for PostgreSQL's `%s`."""

    placeholder = "?"

    @contextmanager
    def transaction(self) -> Iterator[Any]:  # pragma: no cover - each backend has its own
        raise NotImplementedError
        yield

    def close(self) -> None:
        """Release connections."""

    def _sql(self, sql: str) -> str:
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)

    def _rows(self, sql: str, parameters: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self.transaction() as cursor:
            cursor.execute(self._sql(sql), parameters)
            return [dict(row) for row in cursor.fetchall()]


class SqliteFile:
    """A store in one SQLite file: its tables created on open, one connection and transaction per call.

    Mixed in before the store's own base class, whose SQL then runs on `transaction`.
    """

    schema: str = ""

    def __init__(self, path: Path) -> None:
        self.path = path
        create_sqlite(path, self.schema)

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        with sqlite_transaction(self.path) as cursor:
            yield cursor


__all__ = [
    "SqlStore",
    "SqliteFile",
    "connect_sqlite",
    "create_sqlite",
    "postgres_connection",
    "postgres_pool",
    "sqlite_transaction",
]
