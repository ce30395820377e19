"""Which versions are loaded and served, and how a new one takes over.

Each model serves a default version: its `champion` alias, or its newest
version while none has passed the promotion gate. A new default is loaded and
warmed up before it is swapped in (a rolling swap, as in MLServer and TF
Serving); if it fails to load, the previous one keeps serving and /ready and
/models report why. Pinned versions (a request's `version` or `alias`) load on
demand into a small cache. Networks live in the inference process
(`app/inference/client.py`); this process keeps each version's preprocessing
and micro-batcher. See docs/design.md (service).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.core.config import Settings
from app.core.errors import RetryLaterError
from app.core.runtime import settle_heap
from app.inference.client import InferenceProcess, InferenceTimeouts, RemoteModel
from app.ledger.adaptive import CALIBRATED, Bands
from app.serving.batching import MicroBatcher
from app.serving.evidence import NOT_JUDGED, gate_verdict, promoted_by
from training import calendars
from training.artifact import load_preprocessing
from training.errors import BrokenVersionError, NotFoundError, StockcastError
from training.files import check_name
from training.gate import stored_skill
from training.store import CHAMPION, ModelStore

logger = logging.getLogger("stockcast.registry")
# How often loads that replace nothing (first requests, with `preload` false) settle the heap.
FIRST_LOAD_SETTLE_SECONDS = 1.0


class PinnedLoadsLimitedError(RetryLaterError):
    """Pinned requests asked for more version loads than the minute allows."""


class NoPromotedVersionError(StockcastError):
    """An unpinned request for a model with no champion, when the service is set to refuse those."""

    status_code = 409


@dataclass
class ServedVersion:
    """A loaded, warmed-up version with its own micro-batcher."""

    name: str
    version: int
    metadata: dict[str, Any]
    model: RemoteModel
    batcher: MicroBatcher
    # The version's own evidence (`training.gate.stored_skill`), read once at load.
    skill: dict[str, Any] = field(default_factory=dict)
    # The gate's last verdict on it (`app.serving.evidence.gate_verdict`), read from the attempt ledger at load.
    verdict: str = NOT_JUDGED
    # The last date of its training data: a window ending before it asks for in-sample forecasts.
    trained_through: dt.date | None = None
    # Which basis gives its bands (adapted to its live scores by the ledger), and the answers' block saying so.
    bands: Bands = CALIBRATED
    bands_block: dict[str, Any] = field(default_factory=CALIBRATED.describe)

    def set_bands(self, bands: Bands) -> None:
        """Serve the next answers with these bands."""
        self.bands, self.bands_block = bands, bands.describe()

    async def predict(self, windows: np.ndarray) -> np.ndarray:
        """Forecasts and bounds of raw windows (`ForecastSteps.finish`), batched with concurrent requests.

        Shaped (n, 1 + 2 * levels, horizon): forecasts, lower bounds, upper bounds.
        """
        return await self.batcher.submit(windows)

    async def close(self) -> None:
        """Finish the requests already submitted, then unload the network from the inference process."""
        await self.batcher.close()
        await self.model.process.drop(self.model.handle)


@dataclass
class ModelState:
    """What the registry knows about one model name."""

    served: ServedVersion | None = None
    aliases: dict[str, int] = field(default_factory=dict)
    versions: list[int] = field(default_factory=list)
    error: str | None = None
    # Who made the champion champion: "gate" or "manual" (`app.serving.evidence.promoted_by`).
    champion_by: str | None = None


class ModelRegistry:
    """Loads default versions at start-up, swaps in new ones, serves pinned ones."""

    def __init__(self, store: ModelStore, settings: Settings, inference: InferenceProcess | None = None) -> None:
        self.store = store
        self.settings = settings
        self.models: dict[str, ModelState] = {}
        self.pinned: OrderedDict[tuple[str, int], ServedVersion] = OrderedDict()
        # (name, version) -> (fingerprint of its files, why it failed): versions not to load again
        # until their files change, so that a broken newest version is not retried, nor the served
        # one reloaded and recompiled, on every refresh.
        self._failed: dict[tuple[str, int], tuple[tuple[tuple[str, int, int], ...], str]] = {}
        self._lock = asyncio.Lock()
        self._first_loads: dict[str, asyncio.Lock] = {}
        self._settled_at = float("-inf")
        self._pinned_loads: deque[float] = deque()
        self._refresher: asyncio.Task[None] | None = None
        # `inference`: a stand-in backend with the same methods (tests' `FakeInference`); None: the real process.
        self.inference = inference or InferenceProcess(
            store.root,
            log_level=settings.log_level,
            timeouts=InferenceTimeouts.from_settings(settings),
            temp_dir=settings.temp_dir / "inference",
            xla=settings.inference_xla,
            engine=settings.inference_engine,
        )
        self.started = False
        # The bands a version serves when it loads (the ledger's adaptive bands); None: as calibrated.
        self.bands_for: Callable[[ServedVersion], Awaitable[Bands]] | None = None

    # Loading -------------------------------------------------------------------

    async def _load(self, name: str, version: int) -> ServedVersion:
        """Preprocessing here, the network in the inference process (which warms it up)."""
        metadata, spec, scaler = await asyncio.to_thread(load_preprocessing, self.store, name, version)
        # The calendar's sessions are built once (seconds for some exchanges),
        # here rather than in the first request that needs a date.
        calendar = calendars.calendar_of(metadata)
        for day in {dt.date.today(), dt.date.fromisoformat(str(metadata.get("trained_through") or dt.date.today()))}:
            await asyncio.to_thread(calendars.sessions_after, day, 1, calendar)
        # The inference process reads the version's folder: with object storage, fetched (and checked) here first.
        await asyncio.to_thread(self.store.version_dir, name, version)
        handle = await self.inference.load(name, version, self.settings.max_batch_size)
        model = RemoteModel(metadata, spec, scaler, self.inference, handle)
        batcher = MicroBatcher(
            predict_later=model.forecast_later,
            max_batch_size=self.settings.max_batch_size,
            max_wait_us=self.settings.max_batch_wait_us,
        )
        skill = stored_skill(metadata, self.settings.gate_significance_level)
        verdict = gate_verdict(await asyncio.to_thread(self.store.attempts, name), version)
        through = metadata.get("trained_through")
        served = ServedVersion(
            name=name,
            version=version,
            metadata=metadata,
            model=model,
            batcher=batcher,
            skill=dict(skill),
            verdict=verdict,
            trained_through=dt.date.fromisoformat(str(through)) if through else None,
        )
        if self.bands_for is not None:
            served.set_bands(await self.bands_for(served))
        return served

    async def refresh(self, name: str | None = None, load: bool = False) -> None:
        """Re-read the store for one model (or all) and swap in changed defaults.

        With the setting `preload` false a model not loaded yet stays so, unless `load`.
        """
        async with self._lock:
            names = [name] if name is not None else sorted(set(self.store.model_names()) | set(self.models))
            for model_name in names:
                await self._refresh_one(model_name, load)

    async def _refresh_one(self, name: str, load: bool = False) -> None:
        state = self.models.setdefault(name, ModelState())
        state.versions = await asyncio.to_thread(self.store.versions, name)
        aliases = await asyncio.to_thread(self.store.aliases, name)
        if aliases != state.aliases or (aliases.get(CHAMPION) is not None) != (state.champion_by is not None):
            # The alias log is read only when the aliases moved: a refresh runs every few seconds.
            champion = aliases.get(CHAMPION)
            log = await asyncio.to_thread(self.store.alias_log, name) if champion is not None else []
            # A champion the log never names (aliases.json written by hand) was not made by the gate.
            state.champion_by = (promoted_by(log, champion) or "manual") if champion is not None else None
        state.aliases = aliases
        wanted = await asyncio.to_thread(self.store.default_version, name)
        if wanted is None:
            self.models.pop(name, None)
            return
        if state.served is not None and state.served.version == wanted:
            return
        if state.served is None and not self.settings.preload and not load and state.error is None:
            # Loaded on the model's first request (`_get`); nothing to swap until then.
            return
        # Try the wanted version, then older ones, so that a broken newest
        # version never leaves a model without anything to serve.
        candidates = [wanted] + [version for version in reversed(state.versions) if version < wanted]
        if state.served is not None:
            # Fall back no further than what is served; a rollback below it tries only its target.
            candidates = [version for version in candidates if version >= state.served.version] or [wanted]
        for version in candidates:
            if state.served is not None and version == state.served.version:
                # Everything preferred to the served version failed: keep it
                # as it is. Loading it again would recompile it every refresh.
                return
            remembered = await asyncio.to_thread(self._remembered_failure, name, version)
            if remembered is not None:
                state.error = state.error if version != wanted else remembered
                continue
            try:
                loaded = await self._load(name, version)
            except Exception as error:
                reason = str(error) if isinstance(error, StockcastError) else f"{type(error).__name__}: {error}"
                if not isinstance(error, StockcastError):
                    logger.exception("model %s v%s failed to load", name, version)
                else:
                    logger.error("model %s v%s failed to load: %s", name, version, error)
                message = f"v{version} not served: {reason}"
                await asyncio.to_thread(self._remember_failure, name, version, message)
                if version == wanted:
                    state.error = message
                continue
            previous, state.served = state.served, loaded
            state.error = None if version == wanted else state.error
            logger.info("serving %s v%s", name, version)
            if previous is not None:
                await previous.close()
            # Re-freeze: the old version can be freed, the new one's objects frozen. A first load
            # (setting `preload` false) frees nothing, and a full collection per model made each
            # first request wait for one: those settle at most once a second.
            now = time.monotonic()
            if self.started and (previous is not None or now - self._settled_at >= FIRST_LOAD_SETTLE_SECONDS):
                settle_heap()
                self._settled_at = now
            return

    def _files_fingerprint(self, name: str, version: int) -> tuple[tuple[str, int, int], ...]:
        """What changes when a version's files change: each file's name, size and modification time."""
        try:
            # With object storage this fetches the version: one that cannot be fetched (or fails its
            # checks) has no fingerprint, and a stored version's files never change.
            folder = self.store.version_dir(name, version)
            return tuple(
                sorted(
                    (path.name, (stat := path.stat()).st_size, stat.st_mtime_ns)
                    for path in folder.iterdir()
                    if path.is_file()
                )
            )
        except (OSError, StockcastError):
            return ()

    def _remember_failure(self, name: str, version: int, message: str) -> None:
        """Remember that a version failed to load, against its files as they are now."""
        self._failed[(name, version)] = (self._files_fingerprint(name, version), message)

    def _remembered_failure(self, name: str, version: int) -> str | None:
        """Why this version failed to load, if it did and its files have not changed since (then it is not retried)."""
        failure = self._failed.get((name, version))
        if failure is None:
            return None
        fingerprint, message = failure
        if fingerprint != self._files_fingerprint(name, version):
            del self._failed[(name, version)]
            return None
        return message

    async def start(self) -> None:
        """Start the inference process, load every model's default version and keep watching the store."""
        await self.inference.start()
        await self.refresh()
        self.started = True
        self._refresher = asyncio.create_task(self._watch(), name="registry-refresh")

    async def _watch(self) -> None:
        # Picks up versions trained by the CLI and alias changes made on disk.
        while True:
            await asyncio.sleep(self.settings.refresh_seconds)
            try:
                await self.refresh()
            except StockcastError as error:
                # An object store that does not answer: what is loaded keeps serving; no traceback per poll.
                logger.warning("store refresh failed: %s", error)
            except Exception:
                logger.exception("store refresh failed")

    async def stop(self) -> None:
        """Stop watching, close every batcher and stop the inference process."""
        if self._refresher is not None:
            self._refresher.cancel()
        for state in self.models.values():
            if state.served is not None:
                await state.served.close()
        for served in self.pinned.values():
            await served.close()
        await self.inference.stop()

    def loaded_versions(self) -> dict[str, list[int]]:
        """Versions loaded per model: the default one and any pinned ones (for /metrics)."""
        loaded: dict[str, list[int]] = {}
        # Copies: a scrape reads these from a thread while the event loop may change them.
        for name, state in list(self.models.items()):
            if state.served is not None:
                loaded.setdefault(name, []).append(state.served.version)
        for name, version in list(self.pinned):
            loaded.setdefault(name, []).append(version)
        return loaded

    def serving(self) -> list[ServedVersion]:
        """Every loaded version: each model's default and the pinned ones."""
        defaults = [state.served for state in list(self.models.values()) if state.served is not None]
        return [*defaults, *list(self.pinned.values())]

    def served_engines(self) -> dict[str, str | None]:
        """What runs each model's default version: "onnx", "xla" or "tensorflow" (None while reloading)."""
        models = list(self.models.items())
        return {name: state.served.model.engine for name, state in models if state.served is not None}

    def served_versions(self) -> dict[str, int]:
        """The version each model serves by default (for /metrics)."""
        models = list(self.models.items())
        return {name: state.served.version for name, state in models if state.served is not None}

    # Lookup --------------------------------------------------------------------

    async def get(self, name: str, version: int | None = None, alias: str | None = None) -> ServedVersion:
        """The version a request asks for; NotFoundError if it does not exist."""
        served, _ = await self.resolve(name, version, alias)
        return served

    async def resolve(
        self, name: str, version: int | None = None, alias: str | None = None
    ) -> tuple[ServedVersion, str]:
        """The version a request asks for and how it was chosen (the answer's `skill.served_as`).

        "pinned" when the request named a version or alias; otherwise
        "champion", "fallback: ..." when the champion could not be loaded,
        or "unpromoted" when no version has passed the gate. With the
        setting `unpromoted_default="refuse"` an unpinned request for an
        unpromoted model is refused (409).
        """
        if version is not None or alias is not None:
            return await self._get(name, version, alias), "pinned"
        served = await self._get(name, None, None)
        champion = self.models[name].aliases.get(CHAMPION)
        if champion is None:
            if self.settings.unpromoted_default == "refuse":
                raise NoPromotedVersionError(
                    f"model '{name}' has no promoted version: no version has passed the promotion gate, and this "
                    "service refuses unpinned requests for it (setting unpromoted_default); pin a version or "
                    "alias to use one anyway"
                )
            return served, "unpromoted"
        if served.version != champion:
            return served, f"fallback: champion v{champion} failed to load; serving v{served.version}"
        return served, "champion"

    def promoted_by(self, name: str, version: int) -> str | None:
        """Who made `version` champion ("gate" or "manual"); None when it is not the model's champion."""
        state = self.models.get(name)
        if state is None or state.aliases.get(CHAMPION) != version:
            return None
        return state.champion_by

    async def _get(self, name: str, version: int | None = None, alias: str | None = None) -> ServedVersion:
        state = self.models.get(name)
        if state is None:
            check_name(name)  # a name no model can have is a 422, as on every route
            raise NotFoundError(f"unknown model '{name}'; models: {sorted(self.models)}")
        if alias is not None:
            if alias not in state.aliases:
                raise NotFoundError(f"model '{name}' has no alias '{alias}'; aliases: {sorted(state.aliases)}")
            version = state.aliases[alias]
        if version is None or (state.served is not None and state.served.version == version):
            if state.served is None and not self.settings.preload and state.error is None:
                await self._load_on_first_request(name)
            if state.served is None:
                raise BrokenVersionError(f"model '{name}' has no loadable version: {state.error}")
            return state.served
        if version not in state.versions:
            raise NotFoundError(f"model '{name}' has no version {version}; versions: {state.versions}")
        return await self._pinned(name, version)

    async def _load_on_first_request(self, name: str) -> None:
        """Load a model's default version now (setting `preload` false); concurrent first requests share one load.

        A lock per model, not the registry's: a refresh of hundreds of models holds that one for
        a second or more, and it never loads a model that is not loaded yet, so it cannot race this.
        """
        async with self._first_loads.setdefault(name, asyncio.Lock()):
            state = self.models.get(name)
            if state is not None and state.served is None and state.error is None:
                await self._refresh_one(name, load=True)

    def versions_of(self, name: str) -> list[int]:
        """A model's versions in the store, oldest first; NotFoundError (as `get` words it) for an unknown model."""
        state = self.models.get(name)
        if state is None:
            check_name(name)
            raise NotFoundError(f"unknown model '{name}'; models: {sorted(self.models)}")
        return list(state.versions)

    def loaded(self, name: str, version: int | None = None) -> ServedVersion | None:
        """The version (the default one if None) when it is loaded and held by the running inference process.

        Never loads anything: what the standard protocols' readiness and
        version status report.
        """
        state = self.models.get(name)
        if state is None:
            return None
        served = state.served if version is None or (state.served and state.served.version == version) else None
        served = served or (self.pinned.get((name, version)) if version is not None else None)
        return served if served is not None and self.inference.serving(served.model.handle) else None

    async def _pinned(self, name: str, version: int) -> ServedVersion:
        key = (name, version)
        if key in self.pinned:
            self.pinned.move_to_end(key)
            return self.pinned[key]
        async with self._lock:
            if key not in self.pinned:
                remembered = await asyncio.to_thread(self._remembered_failure, name, version)
                if remembered is not None:
                    raise BrokenVersionError(f"model '{name}' {remembered}")
                self._count_pinned_load()
                try:
                    self.pinned[key] = await self._load(name, version)
                except StockcastError as error:
                    await asyncio.to_thread(self._remember_failure, name, version, f"v{version} not served: {error}")
                    raise
                settle_heap()
                while len(self.pinned) > max(self.settings.pinned_cache_size, 1):
                    _, evicted = self.pinned.popitem(last=False)
                    await evicted.close()
        return self.pinned[key]

    def _count_pinned_load(self) -> None:
        """Spend one of the minute's pinned loads, or refuse: a client cycling versions must not keep
        the inference process loading while everyone else's forecasts wait behind it."""
        now = time.monotonic()
        while self._pinned_loads and now - self._pinned_loads[0] >= 60:
            self._pinned_loads.popleft()
        limit = self.settings.pinned_loads_per_minute
        if len(self._pinned_loads) >= limit:
            raise PinnedLoadsLimitedError(
                f"{limit} pinned versions were loaded in the last minute, the most allowed"
                " (STOCKCAST_PINNED_LOADS_PER_MINUTE); the default version and the "
                f"{self.settings.pinned_cache_size} most recently pinned ones answer at once",
                60 - (now - self._pinned_loads[0]),
            )
        self._pinned_loads.append(now)

    async def move_alias(
        self, name: str, alias: str, version: int, reason: str, by: str | None = None
    ) -> dict[str, Any]:
        """Point an alias at a version that loads; a version that fails to load is refused and the alias restored.

        `by` (the API key's name) is written in the alias log with the change.
        """
        previous = self.store.aliases(name).get(alias)
        entry = self.store.set_alias(name, alias, version, reason=reason, by=by)
        try:
            if alias == CHAMPION:
                await self.refresh(name, load=True)
                state = self.models.get(name)
                if state is None or state.served is None or state.served.version != version:
                    raise BrokenVersionError(state.error if state and state.error else f"v{version} was not loaded")
            else:
                await self.refresh(name)
                await self.get(name, version=version)
        except StockcastError as error:
            if previous is not None:
                self.store.set_alias(name, alias, previous, reason=f"restored: v{version} failed to load", by=by)
            await self.refresh(name)
            raise BrokenVersionError(
                f"alias '{alias}' not moved to v{version}: it cannot be served ({error}); still v{previous}"
                if previous is not None
                else f"alias '{alias}' not usable: {error}"
            ) from error
        return entry

    def status(self) -> dict[str, Any]:
        """What is served: each model's default version (None if none loads), what is not loaded and why."""
        servable = {name for name, state in self.models.items() if self._servable(state)}
        return {
            # Without the ping /ready adds (`readiness`): started, a worker running, something servable.
            "ready": self.started and self.inference.pid is not None and (bool(servable) or not self.models),
            "inference_process": self.inference.status(),
            "models": {
                name: state.served.version if state.served else None for name, state in sorted(self.models.items())
            },
            "not_loaded": sorted(set(self.models) - servable),
            "problems": {name: state.error for name, state in sorted(self.models.items()) if state.error},
            "engines": dict(sorted(self.served_engines().items())),
        }

    def _servable(self, state: ModelState) -> bool:
        if state.served is None:
            # Not loaded yet by choice (setting `preload` false): its first request loads it.
            return not self.settings.preload and state.error is None
        return self.inference.serving(state.served.model.handle)

    async def readiness(self, name: str | None = None) -> tuple[str | None, dict[str, Any]]:
        """Why the service (or one model) cannot take traffic now, None if it can; and `status()`.

        The service is ready when the inference process answers and at least
        one model can be served (or the store holds none yet, so that uploads
        and training can start): one broken model must not take the others
        out of a balancer. A model is ready when its default version is loaded
        in the answering inference process. NotFoundError for an unknown model.
        """
        status = self.status()
        if name is not None and name not in self.models:
            check_name(name)
            raise NotFoundError(f"unknown model '{name}'; models: {sorted(self.models)}")
        if not self.started:
            return "starting up", status
        inference = status["inference_process"]
        if inference["pid"] is None:
            return f"the inference process is restarting ({inference['last_exit']})", status
        if not await self.inference.answering(self.settings.ready_timeout_seconds):
            return (
                f"the inference process is not answering (no reply within {self.settings.ready_timeout_seconds:g} s)",
                status,
            )
        if name is not None:
            if name in status["not_loaded"]:
                return f"model '{name}' is not loaded: {self.models[name].error or 'its version is loading'}", status
            return None, status
        if self.models and len(status["not_loaded"]) == len(self.models):
            return f"no model can be served; not loaded: {status['not_loaded']}", status
        return None, status
