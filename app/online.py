"""The ledger in the running service: opened at start-up, scoring after appends, bands and champions judged.

Glue between the ledger (`app.ledger`), the datasets and the registry, so
that none of them imports the others. See docs/ledger.md.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any, Literal

from app.core.config import Settings
from app.datasets import DatasetStore
from app.ledger.adaptive import Bands, adaptive_bands
from app.ledger.demotion import MONITOR, champion_since, demotion_due
from app.ledger.recorder import Ledger
from app.ledger.scoring import closes_by_column, score_dataset
from app.ledger.shadow import live_promotion
from app.ledger.store import LedgerStore, SqliteLedger
from app.serving.registry import ModelRegistry, ServedVersion
from app.shadow import ForecasterFactory, child_forecaster, shadow_dataset
from training import calendars
from training.data import load_prices
from training.errors import NotFoundError
from training.store import CHALLENGER, CHAMPION, ModelStore

logger = logging.getLogger("stockcast.monitor")

# What happened to the ledger's scoring after an append (the append's answer says it).
Scoring = Literal["done", "queued", "off"]


def open_ledger(settings: Settings, datasets: DatasetStore) -> Ledger:
    """The ledger the settings ask for: in SQLite under the data folder, or PostgreSQL when scaled out."""
    store = ledger_store(settings)

    # The flush asks every second while forecasts are served; the report is read again only when the files changed.
    known: dict[str, tuple[tuple[int, ...], str | None]] = {}

    def data_through(dataset: str) -> str | None:
        try:
            csv = datasets.csv_path(dataset)
            stamp = tuple(
                value
                for path in (csv, csv.with_suffix(".json"))
                for value in (path.stat().st_mtime_ns, path.stat().st_size)
            )
            if dataset not in known or known[dataset][0] != stamp:
                known[dataset] = (stamp, str(datasets.report(dataset)["date_range"]["end"]))
            return known[dataset][1]
        except (NotFoundError, KeyError, OSError, ValueError):
            return None

    return Ledger(
        store,
        queue_size=settings.ledger_queue_size,
        flush_seconds=settings.ledger_flush_seconds,
        data_through=data_through,
        retention_days=settings.ledger_retention_days,
    )


def bands_of(store: LedgerStore, served: ServedVersion, settings: Settings) -> Bands:
    """The bands a version serves, from its live scores in the ledger."""
    rows = store.scores(served.name, served.version)
    return adaptive_bands(
        served.metadata.get("intervals") or {},
        rows,
        gamma=settings.adaptive_gamma,
        min_scores=settings.adaptive_min_scores,
    )


def watch_bands(registry: ModelRegistry, ledger: Ledger, settings: Settings) -> None:
    """Every version the registry loads serves the bands its live scores give."""

    async def bands_for(served: ServedVersion) -> Bands:
        return await asyncio.to_thread(bands_of, ledger.store, served, settings)

    registry.bands_for = bands_for


def score_stored(store: LedgerStore, datasets: DatasetStore, dataset: str) -> int:
    """Score the ledger's open forecasts of `dataset` against its stored closes; how many gained a score."""
    closes = closes_by_column(load_prices(datasets.csv_path(dataset)).frame)
    return score_dataset(store, dataset, closes)


def ledger_store(settings: Settings) -> LedgerStore:
    """The ledger's store the settings name (SQLite under the data folder, or PostgreSQL when scaled out)."""
    if settings.database_url is not None:
        from app.ledger.postgres import PostgresLedger

        return PostgresLedger(settings.database_url, settings.database_pool_size)
    return SqliteLedger(settings.ledger_db)


async def flush_ledger(app: Any) -> None:
    """Write what was served so far, before a change of the data: it was served before those rows existed."""
    ledger: Ledger | None = getattr(app.state, "ledger", None)
    if ledger is not None:
        await ledger.flush()


async def score_appended(app: Any, dataset: str) -> tuple[int | None, Scoring]:
    """After rows were appended to `dataset`: score the ledger's open forecasts and adapt the bands.

    Embedded, at once: (how many scored, "done"). Scaled out, a queue worker
    scores them and tells every replica: (None, "queued"). (None, "off")
    without a ledger.
    """
    ledger: Ledger | None = getattr(app.state, "ledger", None)
    if ledger is None:
        return None, "off"
    # Forecasts served while the rows were written are scored with the rest.
    await ledger.flush()
    if await asyncio.to_thread(app.state.jobs.defer_scoring, dataset):
        return None, "queued"
    datasets: DatasetStore = app.state.datasets
    scored = await asyncio.to_thread(score_stored, ledger.store, datasets, dataset)
    # The challenger's forecasts for the champion's logged windows: a thread that waits on a child process.
    factory: ForecasterFactory = getattr(app.state, "shadow_forecaster", child_forecaster)
    shadowed = await asyncio.to_thread(shadow_dataset, ledger.store, app.state.store, datasets, dataset, factory)
    if scored or shadowed:
        for model in await asyncio.to_thread(ledger.store.models_of, dataset):
            await refresh_bands(app, model)
            if await asyncio.to_thread(demote_if_due, ledger.store, app.state.store, model, app.state.settings):
                # The next unpinned request gets what unpromoted_default says.
                await app.state.registry.refresh(model)
            now = app.state.clock()
            if await asyncio.to_thread(promote_if_due, ledger.store, app.state.store, model, app.state.settings, now):
                await app.state.registry.refresh(model)
    return scored, "done"


def demote_if_due(ledger: LedgerStore, models: ModelStore, model: str, settings: Settings) -> dict[str, Any] | None:
    """After scoring: take `champion` away from a version the monitor finds in breach for
    `demote_after_sessions` sessions (`app.ledger.demotion`); the alias log's entry, or None."""
    champion = models.aliases(model).get(CHAMPION)
    if champion is None or settings.demote_after_sessions < 1:
        return None
    demotion = demotion_due(
        ledger.scores(model),
        champion=champion,
        since=champion_since(models.alias_log(model), champion),
        sessions=settings.demote_after_sessions,
        coverage_alpha=settings.monitoring_coverage_alpha,
        skill_alpha=settings.monitoring_skill_alpha,
        min_scores=settings.monitoring_min_scores,
    )
    if demotion is None:
        return None
    with models.alias_lock(model):
        if models.aliases(model).get(CHAMPION) != champion:
            return None  # moved meanwhile (a promotion, an admin): judged again after the next scores
        entry = models.remove_alias(model, CHAMPION, demotion.reason, by=MONITOR, details={"figures": demotion.figures})
    logger.warning("%s v%d is no longer champion: %s", model, champion, demotion.reason)
    return entry


def promote_if_due(
    ledger: LedgerStore, models: ModelStore, model: str, settings: Settings, now: dt.datetime
) -> dict[str, Any] | None:
    """After scoring, with `promote_on_live_evidence` on: make the challenger champion when its backtest and the
    paired live test say so (`app.ledger.shadow.live_promotion`) and the model's exchange is closed at `now`.

    The alias log's entry (both tests in it), or None.
    """
    if not settings.promote_on_live_evidence:
        return None
    aliases = models.aliases(model)
    champion, challenger = aliases.get(CHAMPION), aliases.get(CHALLENGER)
    if champion is None or challenger is None or champion == challenger:
        return None
    metadata = models.read_metadata(model, challenger)
    calendar = calendars.calendar_of(metadata)
    if calendars.is_open(now, calendar):
        return None  # never while the market is open: judged again after the next scores
    verdict = live_promotion(
        ledger.scores(model),
        champion,
        challenger,
        metadata,
        level=settings.gate_significance_level,
        min_sessions=settings.live_min_sessions,
    )
    if not verdict["due"]:
        return None
    details = {
        "backtest": verdict["backtest"],
        "live": verdict["live"],
        "look": verdict["look"],
        "level": verdict["level"],
    }
    with models.alias_lock(model):
        if models.aliases(model).get(CHAMPION) != champion or models.aliases(model).get(CHALLENGER) != challenger:
            return None  # moved meanwhile: judged again after the next scores
        entry = models.set_alias(model, CHAMPION, challenger, verdict["reason"], by=MONITOR, details=details)
        models.remove_alias(model, CHALLENGER, f"became champion: {verdict['reason']}", by=MONITOR)
    logger.warning("%s v%d is champion on live evidence (was v%d)", model, challenger, champion)
    return entry


async def refresh_bands(app: Any, model: str) -> None:
    """Adapt the bands of every loaded version of `model` to its live scores (after scoring)."""
    ledger: Ledger | None = getattr(app.state, "ledger", None)
    settings: Settings = app.state.settings
    if ledger is None or not settings.adaptive_bands:
        return
    registry: ModelRegistry = app.state.registry
    for served in registry.serving():
        if served.name == model:
            served.set_bands(await asyncio.to_thread(bands_of, ledger.store, served, settings))


__all__ = [
    "bands_of",
    "demote_if_due",
    "flush_ledger",
    "ledger_store",
    "open_ledger",
    "promote_if_due",
    "refresh_bands",
    "score_appended",
    "score_stored",
    "watch_bands",
]
