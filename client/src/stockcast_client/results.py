"""The service's answers as typed, frozen dataclasses; each keeps the JSON it was read from in `raw`.

Fields a caller acts on are typed; the rest of an answer stays reachable
through `raw`, so a field the service adds later is never lost. pandas is
imported only by `Forecast.to_frame` (the `pandas` extra).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

# What `Forecast.served_as` says when the client answered by itself (`on_unavailable="naive"`).
CLIENT_FALLBACK = "client_fallback"
FINISHED_JOB_STATES = frozenset({"succeeded", "failed", "cancelled"})


def _date(value: Any) -> dt.date | None:
    return dt.date.fromisoformat(str(value)[:10]) if value else None


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True)
class Band:
    """A prediction interval's bounds, in price units."""

    lower: float
    upper: float


@dataclass(frozen=True)
class ForecastStep:
    """One step of a forecast: its session (None when the window had no date), the point and a band per level."""

    step: int
    date: dt.date | None
    close: float
    bands: dict[str, Band] = field(default_factory=dict)


@dataclass(frozen=True)
class Skill:
    """The served version's out-of-sample evidence and how it came to be served, as on every answer.

    `beats_naive` is true only for a version the promotion gate promoted;
    `promoted_by` is "gate" or "manual" for the champion, None otherwise.
    """

    beats_naive: bool
    ratio_to_naive: float | None
    p_value: float | None
    basis: str
    trained_through: dt.date | None
    served_as: str | None
    in_sample: bool | None
    promoted_by: str | None = None
    gate_verdict: str | None = None
    beats_drift: bool = False
    coverage_ok: bool | None = None
    minimum_detectable_effect: float | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Skill:
        """Read the `skill` object of an answer."""
        return cls(
            beats_naive=bool(data.get("beats_naive")),
            ratio_to_naive=_float(data.get("ratio_to_naive")),
            p_value=_float(data.get("p_value")),
            basis=str(data.get("basis", "")),
            trained_through=_date(data.get("trained_through")),
            served_as=data.get("served_as"),
            in_sample=data.get("in_sample"),
            promoted_by=data.get("promoted_by"),
            gate_verdict=data.get("gate_verdict"),
            beats_drift=bool(data.get("beats_drift")),
            coverage_ok=data.get("coverage_ok"),
            minimum_detectable_effect=_float(data.get("minimum_detectable_effect")),
            raw=dict(data),
        )


def _steps(items: list[Mapping[str, Any]]) -> tuple[ForecastStep, ...]:
    return tuple(
        ForecastStep(
            step=int(item["step"]),
            date=_date(item.get("date")),
            close=float(item["close"]),
            bands={level: Band(float(b["lower"]), float(b["upper"])) for level, b in item.get("intervals", {}).items()},
        )
        for item in items
    )


@dataclass(frozen=True)
class Forecast:
    """A forecast of one window.

    `served_as` is the service's (`champion`, `pinned`, `unpromoted`,
    `naive`, `fallback: ...`) or `client_fallback` when the client answered
    the last value itself because the service was unavailable (then
    `version`, `skill` and `forecast_id` are None and `fallback_reason` says why).
    """

    model: str
    version: int | None
    label: str
    last_value: float
    steps: tuple[ForecastStep, ...]
    skill: Skill | None
    forecast_id: str | None
    served_as: str
    in_sample: bool | None
    scorable: bool
    request_id: str | None = None
    fallback_reason: str | None = None

    @property
    def points(self) -> list[float]:
        """Each step's point forecast, in order."""
        return [step.close for step in self.steps]

    @property
    def is_fallback(self) -> bool:
        """Whether the client made this forecast itself (`on_unavailable="naive"`)."""
        return self.served_as == CLIENT_FALLBACK

    def to_frame(self) -> pd.DataFrame:
        """One row per step: step, date, close, then lower_<level> and upper_<level> per band level."""
        import pandas as pd

        levels = sorted({level for step in self.steps for level in step.bands}, key=float)
        rows = []
        for step in self.steps:
            row: dict[str, Any] = {"step": step.step, "date": step.date, "close": step.close}
            for level in levels:
                band = step.bands.get(level)
                row[f"lower_{level}"] = band.lower if band else None
                row[f"upper_{level}"] = band.upper if band else None
            rows.append(row)
        columns = ["step", "date", "close", *(f"{side}_{level}" for level in levels for side in ("lower", "upper"))]
        frame = pd.DataFrame(rows, columns=columns)
        frame.attrs.update(
            model=self.model, version=self.version, forecast_id=self.forecast_id, served_as=self.served_as
        )
        return frame

    @classmethod
    def from_json(cls, data: Mapping[str, Any], request_id: str | None = None) -> Forecast:
        """Read a /predict answer."""
        skill = Skill.from_json(data["skill"])
        return cls(
            model=data["model"],
            version=int(data["version"]),
            label=data["label"],
            last_value=float(data["last_value"]),
            steps=_steps(data["forecast"]),
            skill=skill,
            forecast_id=data.get("forecast_id"),
            served_as=skill.served_as or "",
            in_sample=skill.in_sample,
            scorable=bool(data.get("scorable")),
            request_id=request_id,
        )


def forecasts_of_batch(data: Mapping[str, Any], last_values: list[float], request_id: str | None) -> list[Forecast]:
    """Read a /predict/batch answer; `last_values` are the windows' last label values (the batch omits them)."""
    skill = Skill.from_json(data["skill"])
    ids = data.get("forecast_ids") or [None] * len(data["forecasts"])
    return [
        Forecast(
            model=data["model"],
            version=int(data["version"]),
            label=data["label"],
            last_value=last_value,
            steps=_steps(steps),
            skill=skill,
            forecast_id=forecast_id,
            served_as=skill.served_as or "",
            in_sample=skill.in_sample,
            scorable=any(step.get("date") for step in steps),
            request_id=request_id,
        )
        for steps, forecast_id, last_value in zip(data["forecasts"], ids, last_values, strict=True)
    ]


@dataclass(frozen=True)
class VersionInfo:
    """A version's headline in /models: what a window must look like, and what it forecasts."""

    version: int
    window: int | None
    horizon: int | None
    features: tuple[str, ...]
    label: str | None
    calendar: str | None
    trained_through: dt.date | None
    architecture: str | None
    error: str | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> VersionInfo:
        """Read one entry of a model's `versions`."""
        return cls(
            version=int(data["version"]),
            window=data.get("window"),
            horizon=data.get("horizon"),
            features=tuple(data.get("features") or ()),
            label=data.get("label"),
            calendar=data.get("calendar"),
            trained_through=_date(data.get("trained_through")),
            architecture=data.get("architecture"),
            error=data.get("error"),
            raw=dict(data),
        )


@dataclass(frozen=True)
class ModelInfo:
    """A model: its versions, aliases and the version served by default."""

    name: str
    versions: tuple[VersionInfo, ...]
    aliases: dict[str, int]
    champion: int | None
    default_version: int | None
    serving_error: str | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    def version_info(self, version: int | None = None, alias: str | None = None) -> VersionInfo | None:
        """The version a request with this selector is served by, as far as this description knows; None if unknown."""
        if version is None:
            version = self.aliases.get(alias) if alias is not None else self.default_version
        by_number = {info.version: info for info in self.versions if info.error is None}
        if version is None:
            # Nothing served by default: the newest readable version is the best guess of the shape.
            return by_number[max(by_number)] if by_number else None
        return by_number.get(version)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelInfo:
        """Read GET /models/{name}."""
        return cls(
            name=data["name"],
            versions=tuple(VersionInfo.from_json(item) for item in data.get("versions", [])),
            aliases={str(alias): int(version) for alias, version in (data.get("aliases") or {}).items()},
            champion=data.get("champion"),
            default_version=data.get("default_version"),
            serving_error=data.get("serving_error"),
            raw=dict(data),
        )


@dataclass(frozen=True)
class JobRecord:
    """A training job as the service last described it."""

    id: str
    status: str
    model: str
    progress: dict[str, Any] | None
    result: dict[str, Any] | None
    error: str | None
    cancel_requested: bool
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def finished(self) -> bool:
        """Whether the job has ended (succeeded, failed or cancelled)."""
        return self.status in FINISHED_JOB_STATES

    @property
    def version(self) -> int | None:
        """The version the job stored, once it has succeeded."""
        return None if not self.result or self.result.get("version") is None else int(self.result["version"])

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> JobRecord:
        """Read GET /jobs/{id}."""
        return cls(
            id=data["id"],
            status=data["status"],
            model=str((data.get("request") or {}).get("model", "")),
            progress=data.get("progress"),
            result=data.get("result"),
            error=data.get("error"),
            cancel_requested=bool(data.get("cancel_requested")),
            raw=dict(data),
        )


@dataclass(frozen=True)
class AppendResult:
    """What an append changed, and the dataset after it."""

    dataset: str
    rows_added: int
    rows_replaced: int
    unchanged: int
    added_dates: tuple[dt.date, ...]
    last_date: dt.date
    rows: int
    sha256: str
    missing_sessions: tuple[dt.date, ...] | None
    scored_forecasts: int | None
    scoring: str
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AppendResult:
        """Read a POST /datasets/{name}/rows answer."""
        missing = data.get("missing_sessions")
        return cls(
            dataset=data["dataset"],
            rows_added=int(data["rows_added"]),
            rows_replaced=int(data["rows_replaced"]),
            unchanged=int(data["unchanged"]),
            added_dates=tuple(dt.date.fromisoformat(day) for day in data.get("added_dates", [])),
            last_date=dt.date.fromisoformat(data["last_date"]),
            rows=int(data["rows"]),
            sha256=data["sha256"],
            missing_sessions=None if missing is None else tuple(dt.date.fromisoformat(day) for day in missing),
            scored_forecasts=data.get("scored_forecasts"),
            scoring=str(data.get("scoring", "")),
            raw=dict(data),
        )


@dataclass(frozen=True)
class Dataset:
    """A stored dataset: its data report's headline (everything else in `raw`)."""

    name: str
    rows: int | None
    start: dt.date | None
    end: dt.date | None
    sha256: str | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_report(cls, data: Mapping[str, Any]) -> Dataset:
        """Read a full data report (POST /datasets, GET /datasets/{name})."""
        dates = data.get("date_range") or {}
        return cls(
            name=data["name"],
            rows=data.get("rows_kept"),
            start=_date(dates.get("start")),
            end=_date(dates.get("end")),
            sha256=data.get("sha256"),
            raw=dict(data),
        )

    @classmethod
    def from_summary(cls, data: Mapping[str, Any]) -> Dataset:
        """Read one entry of GET /datasets (no sha256 there)."""
        return cls(
            name=data["name"],
            rows=data.get("rows"),
            start=_date(data.get("start")),
            end=_date(data.get("end")),
            sha256=None,
            raw=dict(data),
        )


@dataclass(frozen=True)
class AliasUpdate:
    """A model's aliases after a change, and the change (its line of the alias log)."""

    aliases: dict[str, int]
    change: dict[str, Any]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AliasUpdate:
        """Read a PUT /models/{name}/aliases/{alias} answer."""
        return cls(aliases={str(k): int(v) for k, v in data["aliases"].items()}, change=dict(data["change"]))


@dataclass(frozen=True)
class MonitoringWindow:
    """One look-back of a group's live step-1 scores (`last_20`, `last_60`, `last_250`, `since_live`)."""

    sessions: int
    coverage: dict[str, float | None]
    ratio_to_naive: float | None
    hit_rate: float | None
    beats_naive: bool
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MonitoringWindow:
        """Read one entry of a group's `windows`."""
        return cls(
            sessions=int(data.get("sessions", 0)),
            coverage={level: band.get("coverage") for level, band in (data.get("coverage") or {}).items()},
            ratio_to_naive=_float(data.get("ratio_to_naive")),
            hit_rate=_float((data.get("direction") or {}).get("hit_rate")),
            beats_naive=bool((data.get("skill") or {}).get("beats_naive")),
            raw=dict(data),
        )


@dataclass(frozen=True)
class MonitoringGroup:
    """One version as served one way: its status, why, and its look-backs."""

    version: int
    served_as: str
    status: str
    reasons: tuple[str, ...]
    live_sessions: int
    windows: dict[str, MonitoringWindow]
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MonitoringGroup:
        """Read one entry of `groups`."""
        return cls(
            version=int(data["version"]),
            served_as=data["served_as"],
            status=data["status"],
            reasons=tuple(data.get("reasons", [])),
            live_sessions=int(data.get("live_sessions", 0)),
            windows={name: MonitoringWindow.from_json(item) for name, item in (data.get("windows") or {}).items()},
            raw=dict(data),
        )


@dataclass(frozen=True)
class Monitoring:
    """How a model's served forecasts did once their closes arrived: the status of the version served by default."""

    model: str
    served_version: int | None
    status: str
    groups: tuple[MonitoringGroup, ...]
    unscorable: int | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def reasons(self) -> tuple[str, ...]:
        """Why the status is not ok: the reasons of the group it is taken from."""
        of = self.raw.get("status_of") or {}
        for group in self.groups:
            if (group.version, group.served_as) == (of.get("version"), of.get("served_as")):
                return group.reasons
        return ()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Monitoring:
        """Read GET /models/{name}/monitoring."""
        return cls(
            model=data["model"],
            served_version=data.get("served_version"),
            status=data["status"],
            groups=tuple(MonitoringGroup.from_json(item) for item in data.get("groups", [])),
            unscorable=data.get("unscorable"),
            raw=dict(data),
        )


__all__ = [
    "CLIENT_FALLBACK",
    "AliasUpdate",
    "AppendResult",
    "Band",
    "Dataset",
    "Forecast",
    "ForecastStep",
    "JobRecord",
    "ModelInfo",
    "Monitoring",
    "MonitoringGroup",
    "MonitoringWindow",
    "Skill",
    "VersionInfo",
    "forecasts_of_batch",
]
