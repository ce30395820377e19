"""Where the ledger's rows live: SQLite in embedded mode, PostgreSQL when scaled out, one set of SQL.

Both hold the same two tables (docs/ledger.md): `ledger_forecasts`, one
row per distinct served forecast with its hit count, and `ledger_scores`,
one row per scored step. Dates are ISO text and structured fields JSON
text in both, so every query is written once; only the placeholder and
how a connection is taken differ.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from app.core.databases import SqliteFile, SqlStore

FORECAST_COLUMNS = (
    "forecast_id",
    "model",
    "version",
    "served_as",
    "dataset",
    "key_name",
    "request_id",
    "origin",
    "in_sample",
    "data_through",
    "label",
    "label_last",
    "scale",
    "steps",
    "horizon",
    "served_at",
    "last_served_at",
    "hits",
)
SCORE_COLUMNS = (
    "forecast_id",
    "step",
    "model",
    "version",
    "served_as",
    "dataset",
    "origin",
    "target",
    "replay",
    "actual",
    "forecast",
    "naive",
    "log_error",
    "naive_log_error",
    "inside",
    "scale",
    "split_suspect",
    "scored_at",
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger_forecasts (
    forecast_id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    version INTEGER NOT NULL,
    served_as TEXT NOT NULL,
    dataset TEXT,
    key_name TEXT,
    request_id TEXT,
    origin TEXT,
    in_sample INTEGER,
    data_through TEXT,
    label TEXT NOT NULL,
    label_last DOUBLE PRECISION NOT NULL,
    scale DOUBLE PRECISION,
    steps TEXT NOT NULL,
    horizon INTEGER NOT NULL,
    served_at TEXT NOT NULL,
    last_served_at TEXT NOT NULL,
    hits INTEGER NOT NULL,
    scored_steps INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS ledger_forecasts_open ON ledger_forecasts (dataset, scored_steps);
CREATE INDEX IF NOT EXISTS ledger_forecasts_age ON ledger_forecasts (served_at);
CREATE TABLE IF NOT EXISTS ledger_scores (
    forecast_id TEXT NOT NULL,
    step INTEGER NOT NULL,
    model TEXT NOT NULL,
    version INTEGER NOT NULL,
    served_as TEXT NOT NULL,
    dataset TEXT,
    origin TEXT NOT NULL,
    target TEXT NOT NULL,
    replay INTEGER NOT NULL,
    actual DOUBLE PRECISION NOT NULL,
    forecast DOUBLE PRECISION NOT NULL,
    naive DOUBLE PRECISION NOT NULL,
    log_error DOUBLE PRECISION NOT NULL,
    naive_log_error DOUBLE PRECISION NOT NULL,
    inside TEXT NOT NULL,
    scale DOUBLE PRECISION,
    split_suspect INTEGER NOT NULL,
    scored_at TEXT NOT NULL,
    PRIMARY KEY (forecast_id, step)
);
CREATE INDEX IF NOT EXISTS ledger_scores_model ON ledger_scores (model, version, target);
"""

# Ids per IN (...) list: far below SQLite's and PostgreSQL's limits on bound values.
_IDS_PER_QUERY = 500
_UPSERT = (
    f"INSERT INTO ledger_forecasts ({', '.join(FORECAST_COLUMNS)}) VALUES ({', '.join('?' for _ in FORECAST_COLUMNS)})"
    " ON CONFLICT (forecast_id) DO UPDATE SET hits = ledger_forecasts.hits + excluded.hits,"
    " last_served_at = excluded.last_served_at"
)
_INSERT_SCORE = (
    f"INSERT INTO ledger_scores ({', '.join(SCORE_COLUMNS)}) VALUES ({', '.join('?' for _ in SCORE_COLUMNS)})"
    " ON CONFLICT (forecast_id, step) DO NOTHING"
)


class Cursor(Protocol):
    def execute(self, sql: str, parameters: Sequence[Any] = ...) -> Any: ...
    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]]) -> Any: ...
    def fetchall(self) -> list[Any]: ...


class LedgerStore(SqlStore):
    """The ledger's reads and writes; `transaction` gives a cursor, `placeholder` is how SQL marks a value."""

    # Writes ---------------------------------------------------------------------

    def add_forecasts(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert served forecasts; one already kept gains a hit instead."""
        values = [
            tuple(
                json.dumps(row["steps"])
                if column == "steps"
                else row.get("last_served_at", row["served_at"])
                if column == "last_served_at"
                else _int_or_none(row["in_sample"])
                if column == "in_sample"
                else row.get("hits", 1)
                if column == "hits"
                else len(row["steps"])
                if column == "horizon"
                else row.get(column)
                for column in FORECAST_COLUMNS
            )
            for row in rows
        ]
        with self.transaction() as cursor:
            cursor.executemany(self._sql(_UPSERT), values)

    def add_scores(self, scores: Sequence[dict[str, Any]]) -> int:
        """Store step scores (a step scored before is left as it is) and count them on their forecasts."""
        if not scores:
            return 0
        values = [
            tuple(json.dumps(score[column]) if column == "inside" else score[column] for column in SCORE_COLUMNS)
            for score in scores
        ]
        ids = sorted({score["forecast_id"] for score in scores})
        with self.transaction() as cursor:
            cursor.executemany(self._sql(_INSERT_SCORE), values)
            cursor.executemany(
                self._sql(
                    "UPDATE ledger_forecasts SET scored_steps ="
                    " (SELECT COUNT(*) FROM ledger_scores WHERE ledger_scores.forecast_id = ?) WHERE forecast_id = ?"
                ),
                [(forecast, forecast) for forecast in ids],
            )
        return len(scores)

    def forget_before(self, served_before: str) -> int:
        """Delete kept forecasts served before an ISO time; their scores stay (they are the summary)."""
        with self.transaction() as cursor:
            cursor.execute(self._sql("DELETE FROM ledger_forecasts WHERE served_at < ?"), (served_before,))
            return int(getattr(cursor, "rowcount", 0) or 0)

    # Reads ----------------------------------------------------------------------

    def open_forecasts(self, dataset: str) -> list[dict[str, Any]]:
        """Dated forecasts of models trained on `dataset` with steps not yet scored."""
        rows = self._rows(
            "SELECT * FROM ledger_forecasts WHERE dataset = ? AND origin IS NOT NULL"
            " AND scored_steps < horizon ORDER BY origin, forecast_id",
            (dataset,),
        )
        for row in rows:
            row["steps"] = json.loads(row["steps"])
        return rows

    def scored_steps(self, dataset: str) -> dict[str, set[int]]:
        """The steps already scored of each open forecast of `dataset` (forecast id to steps)."""
        rows = self._rows(
            "SELECT s.forecast_id, s.step FROM ledger_scores s JOIN ledger_forecasts f"
            " ON f.forecast_id = s.forecast_id WHERE f.dataset = ? AND f.scored_steps < f.horizon",
            (dataset,),
        )
        done: dict[str, set[int]] = {}
        for row in rows:
            done.setdefault(row["forecast_id"], set()).add(int(row["step"]))
        return done

    def models_of(self, dataset: str) -> list[str]:
        """The models whose kept forecasts came from versions trained on `dataset`."""
        rows = self._rows("SELECT DISTINCT model FROM ledger_forecasts WHERE dataset = ? ORDER BY model", (dataset,))
        return [str(row["model"]) for row in rows]

    def forecast(self, forecast_id: str) -> dict[str, Any] | None:
        """One kept forecast, or None."""
        rows = self._rows("SELECT * FROM ledger_forecasts WHERE forecast_id = ?", (forecast_id,))
        if not rows:
            return None
        rows[0]["steps"] = json.loads(rows[0]["steps"])
        return rows[0]

    def logged_forecasts(self, model: str, version: int) -> list[dict[str, Any]]:
        """A version's kept dated forecasts, without their steps: id, served_as, origin, served_at, data_through."""
        return self._rows(
            "SELECT forecast_id, served_as, origin, served_at, data_through FROM ledger_forecasts"
            " WHERE model = ? AND version = ? AND origin IS NOT NULL ORDER BY served_at, forecast_id",
            (model, version),
        )

    def scores(self, model: str, version: int | None = None) -> list[dict[str, Any]]:
        """Every step score of a model (or of one of its versions), oldest target first."""
        where, parameters = (
            ("model = ?", (model,)) if version is None else ("model = ? AND version = ?", (model, version))
        )
        rows = self._rows(
            f"SELECT * FROM ledger_scores WHERE {where} ORDER BY target, origin, step, forecast_id",
            parameters,
        )
        for row in rows:
            row["inside"] = json.loads(row["inside"])
        return rows

    def score_count(self, model: str) -> int:
        """How many step scores a model has: a cached summary of them is stale once this changes."""
        rows = self._rows("SELECT COUNT(*) AS scores FROM ledger_scores WHERE model = ?", (model,))
        return int(rows[0]["scores"])

    def served_steps(self, forecast_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """The served steps (date, close, bounds) of kept forecasts, by id; those past the retention are absent."""
        found: dict[str, list[dict[str, Any]]] = {}
        ids = list(dict.fromkeys(forecast_ids))
        for start in range(0, len(ids), _IDS_PER_QUERY):
            chunk = ids[start : start + _IDS_PER_QUERY]
            marks = ", ".join("?" for _ in chunk)
            rows = self._rows(f"SELECT forecast_id, steps FROM ledger_forecasts WHERE forecast_id IN ({marks})", chunk)
            found.update((row["forecast_id"], json.loads(row["steps"])) for row in rows)
        return found

    def counts(self, model: str) -> dict[str, int]:
        """Kept forecasts of a model: distinct, requests (hits), and those that can never be scored (no date)."""
        rows = self._rows(
            "SELECT COUNT(*) AS kept, COALESCE(SUM(hits), 0) AS hits,"
            " COALESCE(SUM(CASE WHEN origin IS NULL THEN 1 ELSE 0 END), 0) AS undated"
            " FROM ledger_forecasts WHERE model = ?",
            (model,),
        )
        return {key: int(value) for key, value in rows[0].items()}


class SqliteLedger(SqliteFile, LedgerStore):
    """The ledger in `<data_dir>/ledger.sqlite3` (embedded mode); one connection per call, WAL."""

    schema = SCHEMA


def _int_or_none(value: bool | None) -> int | None:
    return None if value is None else int(value)


__all__ = ["FORECAST_COLUMNS", "SCHEMA", "SCORE_COLUMNS", "LedgerStore", "SqliteLedger"]
