"""The ledger's monitoring side: reads a model's scores and answers /monitoring, its chart and /metrics.

Blocking (database reads, numpy, drawing): callers run it in a thread.
`report` and `chart` read afresh on every call. `summary`, what /metrics
reads at every scrape, is kept per model and recomputed only when the
served version changed, or when it is older than `max_age_seconds` and
the model's score count changed: a scrape costs at most one COUNT a model. See docs/ledger.md, "Monitoring".
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from app.core.config import Settings
from app.ledger.chart import draw_monitoring_chart
from app.ledger.monitoring import (
    COVERAGE_WINDOW,
    STATUS_CODES,
    monitoring_report,
    reported_group,
    step_rows,
    time_order,
)
from app.ledger.store import LedgerStore
from training.errors import StockcastError

# Scores arrive once a session: a scrape may see a summary this old before the count is checked again.
SUMMARY_MAX_AGE_SECONDS = 30.0
# The chart shows about a year of sessions.
CHART_SESSIONS = 250


class LedgerOffError(StockcastError):
    """The forecast ledger is turned off, so there is nothing to monitor."""

    status_code = 409

    def __init__(self) -> None:
        super().__init__(
            "the forecast ledger is off (STOCKCAST_LEDGER=false): served forecasts are not kept, so none are"
            " scored; turn it on to monitor a model"
        )


@dataclass(slots=True)
class _Cached:
    served_version: int | None
    score_count: int
    checked_at: float
    summary: dict[str, Any]


class Monitor:
    """Monitoring answers for the models of one ledger store, with the thresholds of the settings."""

    def __init__(
        self,
        store: LedgerStore,
        *,
        coverage_alpha: float,
        skill_alpha: float,
        min_scores: int,
        max_age_seconds: float = SUMMARY_MAX_AGE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.coverage_alpha = coverage_alpha
        self.skill_alpha = skill_alpha
        self.min_scores = min_scores
        self.max_age_seconds = max_age_seconds
        self.clock = clock
        self._cache: dict[str, _Cached] = {}
        self._lock = threading.Lock()

    @classmethod
    def for_settings(cls, store: LedgerStore, settings: Settings) -> Monitor:
        """A monitor with the thresholds the settings name."""
        return cls(
            store,
            coverage_alpha=settings.monitoring_coverage_alpha,
            skill_alpha=settings.monitoring_skill_alpha,
            min_scores=settings.monitoring_min_scores,
        )

    def report(
        self, model: str, served_version: int | None, aliases: Mapping[str, int] | None = None
    ) -> dict[str, Any]:
        """The /monitoring answer, read now; with the model's `aliases`, its challenger beside its champion."""
        scores = self.store.scores(model)
        counts = self.store.counts(model)
        return {"model": model, **self._report(scores, counts, served_version, aliases)}

    def chart(self, model: str, served_version: int | None) -> bytes:
        """The /monitoring.png chart of the group whose status is the model's, read and drawn now."""
        scores = self.store.scores(model)
        report = self._report(scores, None, served_version)
        chosen = reported_group(report)
        if chosen is None:
            title = model + (f" v{served_version}" if served_version is not None else "")
            return draw_monitoring_chart(f"{title}: status {report['status']}", [], {})
        rows = [
            row
            for row in time_order(step_rows(scores, 1))
            if (row["version"], row["served_as"]) == (chosen["version"], chosen["served_as"])
            and not row["replay"]
            and not row["split_suspect"]
        ]
        sessions = set(sorted({row["origin"] for row in rows})[-CHART_SESSIONS:])
        rows = [row for row in rows if row["origin"] in sessions]
        served = self.store.served_steps([str(row["forecast_id"]) for row in rows])
        title = f"{model} v{chosen['version']} ({chosen['served_as']}): status {report['status']}"
        return draw_monitoring_chart(title, rows, served)

    def summary(self, model: str, served_version: int | None) -> dict[str, Any]:
        """What /metrics shows of a model (see the module docstring for how fresh it is)."""
        with self._lock:
            now = self.clock()
            cached = self._cache.get(model)
            if cached is not None and cached.served_version == served_version:
                if now - cached.checked_at < self.max_age_seconds:
                    return cached.summary
                count = self.store.score_count(model)
                if count == cached.score_count:
                    cached.checked_at = now
                    return cached.summary
            else:
                count = self.store.score_count(model)
            report = self._report(self.store.scores(model), None, served_version)
            summary = summary_of(report)
            self._cache[model] = _Cached(served_version, count, now, summary)
            return summary

    def summaries(self, served_versions: Mapping[str, int]) -> dict[str, dict[str, Any]]:
        """`summary` of every served model."""
        return {model: self.summary(model, version) for model, version in sorted(served_versions.items())}

    def _report(
        self,
        scores: list[dict[str, Any]],
        counts: dict[str, int] | None,
        served_version: int | None,
        aliases: Mapping[str, int] | None = None,
    ) -> dict[str, Any]:
        return monitoring_report(
            scores,
            counts,
            coverage_alpha=self.coverage_alpha,
            skill_alpha=self.skill_alpha,
            min_scores=self.min_scores,
            served_version=served_version,
            aliases=aliases,
        )


def summary_of(report: Mapping[str, Any]) -> dict[str, Any]:
    """The figures /metrics shows: live step-1 scores of the status group, its coverage and ratio, the status."""
    group = reported_group(report)
    status = str(report["status"])
    if group is None:
        return {
            "scored": 0,
            "coverage": {},
            "ratio_to_naive": None,
            "status": status,
            "status_code": STATUS_CODES[status],
        }
    window = group["windows"][COVERAGE_WINDOW]
    return {
        "scored": int(group["skill_test"]["scores"]),
        "coverage": {level: figures["coverage"] for level, figures in window["coverage"].items()},
        "ratio_to_naive": window["ratio_to_naive"],
        "status": status,
        "status_code": STATUS_CODES[status],
    }


__all__ = ["SUMMARY_MAX_AGE_SECONDS", "LedgerOffError", "Monitor", "summary_of"]
