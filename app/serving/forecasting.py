"""The protocol-neutral core of every forecast answer: windows and dates in, arrays out.

`forecast_windows` looks the version up, checks the windows against it
(`app.serving.windows`), forecasts them in one micro-batched call and
returns raw arrays (`Forecasts`). /predict, /predict/batch, V2 infer and TF
Serving :predict all call it and shape their own answers in `app/api`, so
they share one lookup, one set of window checks and one conversion to
prices. `skill` (the version's out-of-sample evidence against naive and drift,
the gate's verdict and how it was chosen: `app.serving.evidence`) travels
with every result, so no caller can take a no-skill forecast for a signal.
See docs/design.md, "Serving path".
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.ledger.adaptive import apply_bands
from app.serving.evidence import naive_skill, network_skill
from app.serving.registry import ModelRegistry, ServedVersion
from app.serving.windows import Window, WindowDates, WindowError, window_to_array, windows_to_array
from training import baselines, calendars, conformal

_total = np.add.reduce


# Not frozen: a frozen dataclass sets each field through object.__setattr__, and one is built per request.
@dataclass(slots=True)
class Forecasts:
    """A batch of checked windows and what the served version forecast for them, as raw arrays."""

    served: ServedVersion
    windows: np.ndarray
    """(n, window, features) raw inputs, float64, oldest row first."""
    last_dates: list[dt.date | None]
    """Each window's last date, when the request carried dates."""
    outputs: np.ndarray
    """(n, 1 + 2 * levels, horizon): forecasts, then lower and upper bounds per level, in price units."""
    levels: tuple[str, ...]
    """The interval levels of `outputs`, in order."""
    skill: dict[str, Any]
    """The answer's `skill`: the version's evidence and `served_as`."""


def _naive_outputs(served: ServedVersion, windows: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    """The naive forecast with its conformal bands (calibrated at training time), shaped like the network's output."""
    spec = served.model.spec
    prices = baselines.naive_forecast(windows[:, -1, spec.label_index], spec.horizon)
    intervals = served.metadata.get("intervals") or {}
    naive = {"score": intervals.get("score", "absolute"), **(intervals.get("naive") or {"half_widths": {}})}
    keys, lower, upper = conformal.stacked_bounds_for(windows, prices, naive, spec)
    return np.concatenate([prices[:, None, :], lower, upper], axis=1), keys


async def forecast_windows(
    registry: ModelRegistry,
    model: str,
    windows: Sequence[Window] | np.ndarray,
    dates: Sequence[WindowDates] | None = None,
    *,
    version: int | None = None,
    alias: str | None = None,
    where: str | Sequence[str] = "windows",
    origins: Sequence[dt.date | None] | None = None,
) -> Forecasts:
    """Look the version up, check the windows against it, forecast them in one micro-batched call.

    `windows` is a sequence of parsed windows (`app.serving.windows.Window`)
    or one finite (n, rows, columns) array; `dates`, when given, holds each
    window's row dates. Errors name each window as `where[index]`, or by its
    own name when `where` is a sequence. `origins` gives the last date of
    windows sent without dates (a client's `last_date`), so that their
    forecasts are dated and can be scored.
    """
    served, served_as = await registry.resolve(model, version=version, alias=alias)
    spec = served.model.spec
    if isinstance(windows, np.ndarray) and windows.ndim == 3:
        values = windows_to_array(windows, spec, where if isinstance(where, str) else "windows")
        last_dates: list[dt.date | None] = [None] * len(values)
    else:
        names = [f"{where}[{index}]" for index in range(len(windows))] if isinstance(where, str) else where
        each_dates = dates if dates is not None else [None] * len(windows)
        checked = [
            window_to_array(window, spec, where=name, dates=window_dates)
            for window, name, window_dates in zip(windows, names, each_dates, strict=True)
        ]
        values = checked[0][0][None] if len(checked) == 1 else np.stack([array for array, _ in checked])
        last_dates = [day for _, day in checked]
    if origins is not None:
        last_dates = [day if day is not None else origin for day, origin in zip(last_dates, origins, strict=True)]
    champion_by = registry.promoted_by(model, served.version)
    if served_as == "unpromoted" and registry.settings.unpromoted_default == "naive":
        skill = naive_skill(served.metadata, served.version, registry.settings.gate_significance_level)
    else:
        skill = network_skill(served.skill, served_as, served.verdict, champion_by)
    skill["in_sample"] = None
    if any(last_dates):
        skill["in_sample"] = _in_sample(served, last_dates, registry.settings.in_sample_forecasts, where)
        await build_calendar(served, last_dates)
    if served_as == "unpromoted" and registry.settings.unpromoted_default == "naive":
        outputs, levels = _naive_outputs(served, values)
    else:
        outputs, levels = await served.predict(values), served.model.interval_levels
        skill["bands"] = served.bands_block
        if served.bands.basis == "adaptive":
            outputs = apply_bands(outputs, levels, served.bands)
    # Inputs in range give finite forecasts; this guards the answer's promise that every number is one.
    # The sum is finite exactly when every output is (barring an overflow, which the full check then
    # clears), and is cheaper than `np.isfinite(...).all()`.
    if not math.isfinite(_total(outputs, None)) and not np.isfinite(outputs).all():
        index = int(np.argwhere(~np.isfinite(outputs))[0][0])
        name = f"{where}[{index}]" if isinstance(where, str) else where[index]
        raise WindowError(f"{name}: this window's forecast is not a finite number; its values are too extreme")
    return Forecasts(served=served, windows=values, last_dates=last_dates, outputs=outputs, levels=levels, skill=skill)


def _in_sample(
    served: ServedVersion, last_dates: Sequence[dt.date | None], policy: str, where: str | Sequence[str]
) -> bool | None:
    """Whether any window's targets were in the version's training data (None: some window has no date).

    With the `refuse` policy such a window is an error: its forecast would
    be judged by evidence that does not apply to it.
    """
    trained_through = served.trained_through
    if trained_through is None:
        return None
    for index, day in enumerate(last_dates):
        if day is not None and day < trained_through and policy == "refuse":
            name = f"{where}[{index}]" if isinstance(where, str) else where[index]
            raise WindowError(
                f"{name}: the window ends on {day}, before {trained_through}, the last date version"
                f" {served.version} was trained on: its targets were in the training data, so the forecast"
                " is in-sample (STOCKCAST_IN_SAMPLE_FORECASTS=refuse)"
            )
    if any(day is not None and day < trained_through for day in last_dates):
        return True
    return None if None in last_dates else False


async def build_calendar(served: ServedVersion, last_dates: Sequence[dt.date | None]) -> None:
    """Build, in a thread, the calendar decades the answer's dates need and no earlier request built.

    A decade's holiday rules are slow to evaluate: on the event loop that
    would stall every other request; here only the request that needs it waits.
    """
    calendar = calendars.calendar_of(served.metadata)
    for day in {day for day in last_dates if day is not None and not calendars.is_built(calendar, day)}:
        await asyncio.to_thread(calendars.sessions_after, day, 1, calendar)


__all__ = ["Forecasts", "build_calendar", "forecast_windows"]
