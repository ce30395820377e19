"""What the ledger keeps of one served forecast, and its id.

A forecast's id is a hash of what determines it (model, version,
`served_as`, origin date, the window's numbers), so it is made without a
lookup and identical requests share one ledger row. `Served` is the
hand-off from a request: references only, turned into rows later by the
flush task (`rows_of`), off the request's path. See docs/ledger.md.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from training import calendars, conformal
from training.spec import WindowSpec


def forecast_id(model: str, version: int, served_as: str, origin: dt.date | None, window: np.ndarray) -> str:
    """32 hex digits naming this forecast: the same inputs always give the same id."""
    # SHA-256 (hardware-accelerated on current CPUs, so faster here than BLAKE2), truncated to 128 bits.
    digest = hashlib.sha256(f"{model}\x00{version}\x00{served_as}\x00{origin}\x00".encode())
    if window.dtype != np.float64 or not window.flags.c_contiguous:
        window = np.ascontiguousarray(window, dtype=np.float64)
    # The array's own buffer: hashed without a copy.
    digest.update(window.data)
    return digest.hexdigest()[:32]


def dataset_of(metadata: dict[str, Any]) -> str | None:
    """The dataset a version was trained on: a job's dataset name, or the stem of the CSV it read."""
    data = metadata.get("data") or {}
    if data.get("dataset"):
        return str(data["dataset"])
    name = str(data.get("name") or "")
    return name.removesuffix(".csv") or None


def in_sample(origin: dt.date | None, trained_through: dt.date | None) -> bool | None:
    """Whether a forecast's targets were in the version's training data; None without an origin date.

    The first target is the session after the origin, so it was trained on
    exactly when the origin is before the last date trained on.
    """
    if origin is None or trained_through is None:
        return None
    return origin < trained_through


@dataclass(slots=True)
class Served:
    """One answer's forecasts as the request hands them over: references to arrays, nothing converted."""

    model: str
    version: int
    served_as: str
    metadata: dict[str, Any]
    spec: WindowSpec
    windows: np.ndarray
    """(n, window, features) raw inputs."""
    origins: list[dt.date | None]
    outputs: np.ndarray
    """(n, 1 + 2 * levels, horizon) forecasts and bounds in price units."""
    levels: tuple[str, ...]
    ids: list[str]
    key_name: str | None
    request_id: str | None
    served_at: float
    """time.time() when answered; formatted when written."""


def rows_of(served: Served, indexes: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """The ledger rows (`ledger_forecasts` columns) of one hand-off: of every window, or of those at `indexes`."""
    if indexes is not None and len(indexes) < len(served.ids):
        served = subset(served, indexes)
    spec, metadata = served.spec, served.metadata
    trained_through = _date(metadata.get("trained_through"))
    calendar = calendars.calendar_of(metadata)
    score = str((metadata.get("intervals") or {}).get("score", "absolute"))
    scales = conformal.score_scale(served.windows, spec, score)
    last_values = served.windows[:, -1, spec.label_index]
    count = len(served.levels)
    served_at = iso_time(served.served_at)
    rows = []
    for index, origin in enumerate(served.origins):
        output = served.outputs[index]
        targets: list[str | None] = (
            [day.isoformat() for day in calendars.sessions_after(origin, spec.horizon, calendar)]
            if origin
            else [None] * spec.horizon
        )
        steps = [
            {
                "date": targets[step],
                "close": float(output[0, step]),
                "bounds": {
                    level: [float(output[1 + at, step]), float(output[1 + count + at, step])]
                    for at, level in enumerate(served.levels)
                },
            }
            for step in range(spec.horizon)
        ]
        rows.append(
            {
                "forecast_id": served.ids[index],
                "model": served.model,
                "version": served.version,
                "served_as": served.served_as,
                "dataset": dataset_of(metadata),
                "key_name": served.key_name,
                "request_id": served.request_id,
                "origin": None if origin is None else origin.isoformat(),
                "in_sample": in_sample(origin, trained_through),
                "label": spec.label,
                "label_last": float(last_values[index]),
                "scale": None if scales is None else float(scales[index]),
                "steps": steps,
                "served_at": served_at,
            }
        )
    return rows


def iso_time(seconds: float) -> str:
    """A time.time() value as the ledger writes it: ISO 8601, UTC, microseconds."""
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat(timespec="microseconds")


def subset(served: Served, indexes: Sequence[int]) -> Served:
    """The same hand-off with only the windows at `indexes`."""
    picked = list(indexes)
    return Served(
        model=served.model,
        version=served.version,
        served_as=served.served_as,
        metadata=served.metadata,
        spec=served.spec,
        windows=served.windows[picked],
        origins=[served.origins[index] for index in picked],
        outputs=served.outputs[picked],
        levels=served.levels,
        ids=[served.ids[index] for index in picked],
        key_name=served.key_name,
        request_id=served.request_id,
        served_at=served.served_at,
    )


def _date(value: object) -> dt.date | None:
    return dt.date.fromisoformat(str(value)) if value else None


__all__ = ["Served", "dataset_of", "forecast_id", "in_sample", "iso_time", "rows_of", "subset"]
