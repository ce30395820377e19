"""The PostgreSQL schema of scaled-out mode: procrastinate's queue tables and our job records.

`python -m app migrate` applies what is missing, each migration in its own
transaction together with the row that records it, under an advisory lock so
that two migrate commands started at once (two compose projects, a retried
deploy) apply each migration once. procrastinate's own `schema --apply`
cannot be run twice, which is why applied migrations are tracked here.

Upgrading procrastinate: append its new files from
`procrastinate/sql/migrations/` (those newer than the pinned version) to
MIGRATIONS, in order, under their own names; never edit an applied entry.
See docs/design.md, "Scaled-out jobs".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import psycopg

from app.ledger.store import SCHEMA as LEDGER_TABLES
from training.errors import StockcastError

# Any fixed number: the key of the advisory lock that serialises migrate commands.
MIGRATION_LOCK_KEY = 7_263_115_015

TRACKING_TABLE = """
CREATE TABLE IF NOT EXISTS stockcast_schema_migrations (
    name text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""

JOBS_TABLE = """
CREATE TABLE stockcast_jobs (
    id text PRIMARY KEY,
    seq bigserial NOT NULL,
    status text NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    model text NOT NULL,
    request jsonb NOT NULL,
    progress jsonb,
    result jsonb,
    error text,
    attempts integer NOT NULL DEFAULT 0,
    worker text,
    queue_job_id bigint,
    cancel_requested boolean NOT NULL DEFAULT false,
    created_at text NOT NULL,
    started_at text,
    finished_at text,
    -- Moved by every write of the job's own runner: the sweeper retries a job
    -- only when both its worker's heartbeat and this are stale.
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stockcast_jobs_status ON stockcast_jobs (status, seq);
CREATE INDEX stockcast_jobs_queue_job ON stockcast_jobs (queue_job_id);
"""


# Retraining schedules and their fired slots (app.schedules.store; SQLite holds the same columns).
SCHEDULES_TABLES = """
CREATE TABLE schedules (
    model text PRIMARY KEY,
    spec text NOT NULL,
    calendar text NOT NULL,
    revision integer NOT NULL,
    anchor text NOT NULL,
    created_at text NOT NULL,
    updated_at text NOT NULL,
    updated_by text,
    last_slot text,
    last_rows integer,
    last_job_id text
);
CREATE TABLE schedule_runs (
    model text NOT NULL,
    slot text NOT NULL,
    revision integer NOT NULL,
    outcome text NOT NULL,
    reason text,
    job_id text,
    rows integer,
    slots integer NOT NULL,
    at text NOT NULL,
    PRIMARY KEY (model, slot)
);
"""


def _procrastinate_schema() -> str:
    from procrastinate.schema import SchemaManager

    return SchemaManager.get_schema()


@dataclass(frozen=True)
class Migration:
    """One named step; `sql` is read when it is applied (procrastinate's file ships with the package)."""

    name: str
    sql: Callable[[], str]


MIGRATIONS: tuple[Migration, ...] = (
    Migration("0001 procrastinate 3.10.0 schema", _procrastinate_schema),
    Migration("0002 stockcast_jobs", lambda: JOBS_TABLE),
    # Every job names the API key that submitted it.
    Migration("0003 stockcast_jobs.submitted_by", lambda: "ALTER TABLE stockcast_jobs ADD COLUMN submitted_by TEXT;"),
    # A client's retry of POST /train with the same Idempotency-Key answers the first job.
    Migration(
        "0004 stockcast_jobs.idempotency_key",
        lambda: "ALTER TABLE stockcast_jobs ADD COLUMN idempotency_key TEXT UNIQUE;",
    ),
    # The forecast ledger (docs/ledger.md): the tables SQLite holds in embedded mode, as they were first.
    Migration("0005 ledger", lambda: LEDGER_TABLES),
    # Retraining on a market schedule: one row per model, one per fired slot (docs/design.md, "Schedules").
    Migration("0006 schedules", lambda: SCHEDULES_TABLES),
)


class SchemaMissingError(StockcastError):
    """The database lacks migrations this code needs."""

    status_code = 503


def applied_migrations(connection: psycopg.Connection) -> set[str]:
    """Names of the migrations recorded in the database (empty when it was never migrated)."""
    exists = connection.execute("SELECT to_regclass('stockcast_schema_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return set()
    return {row[0] for row in connection.execute("SELECT name FROM stockcast_schema_migrations")}


def migrate(database_url: str) -> list[str]:
    """Apply the missing migrations in order; returns the names applied (none on a second run)."""
    applied_now = []
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        try:
            connection.execute(TRACKING_TABLE)
            done = applied_migrations(connection)
            for migration in MIGRATIONS:
                if migration.name in done:
                    continue
                with connection.transaction():
                    connection.execute(migration.sql())  # type: ignore[arg-type]  # our own, fixed SQL
                    connection.execute("INSERT INTO stockcast_schema_migrations (name) VALUES (%s)", (migration.name,))
                applied_now.append(migration.name)
        finally:
            connection.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
    return applied_now


def missing_migrations(connection: psycopg.Connection) -> list[str]:
    """Migrations this code expects that the database has not had."""
    done = applied_migrations(connection)
    return [migration.name for migration in MIGRATIONS if migration.name not in done]


def require_schema(database_url: str) -> None:
    """Raise SchemaMissingError, naming the command to run, when the database is not migrated."""
    with psycopg.connect(database_url, autocommit=True, connect_timeout=10) as connection:
        missing = missing_migrations(connection)
    if missing:
        raise SchemaMissingError(
            f"the job database has no stockcast schema (missing migrations: {missing}); "
            "run `python -m app migrate` with the same STOCKCAST_DATABASE_URL first"
        )
