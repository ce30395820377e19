"""Turning a checked request into forecasts: the logic behind /predict.

Answers are built as plain lists and dicts straight from the inference
output and encoded with orjson: per request that is a few microseconds,
where building the response's pydantic models and dumping them cost several
times more on the event loop. `PredictResponse` and `BatchPredictResponse`
still document the shape (OpenAPI), and the tests validate real answers
against them.

Every answer carries `skill`: the served version's own out-of-sample
evidence against naive (`training.gate.skill_of`) and how the version was
chosen (`served_as`), so a back end can never take a no-skill forecast for a
signal. Forecast dates are the next sessions of the version's trading
calendar (`training.calendars`).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from app.api.schemas import ArrayWindowRequest, BatchPredictRequest, PredictRequest, PriceRow
from app.core.config import default
from app.serving.registry import ModelRegistry, ServedVersion
from app.serving.windows import WindowError, window_to_array, windows_to_array
from training import baselines, calendars, conformal

# What a request may carry as one window (see `window_to_array`).
Window = list[PriceRow] | list[list[float]] | np.ndarray
FORECAST = "forecast"
_total = np.add.reduce


def output_names(levels: Sequence[str]) -> list[str]:
    """Names of the rows of one window's output, in `ForecastSteps.finish` order.

    `forecast`, then `lower_<level>` for every interval level, then
    `upper_<level>`: the names the standard inference protocols give the
    output tensors (`app/api/protocols`).
    """
    return [FORECAST, *(f"lower_{level}" for level in levels), *(f"upper_{level}" for level in levels)]


# Not frozen: a frozen dataclass sets each field through object.__setattr__, and one is built per request.
@dataclass(slots=True)
class Forecasts:
    """A batch of checked windows and what the served version forecast for them, as raw arrays.

    Every answer is shaped from this: /predict's JSON steps and the
    standard protocols' named tensors (`app/api/protocols`), so all of them
    share one lookup, one set of window checks, one micro-batched call and
    one conversion to prices.
    """

    served: ServedVersion
    windows: np.ndarray
    """(n, window, features) raw inputs, float64, oldest row first."""
    last_dates: list[dt.date | None]
    """Each window's last date, when the request carried dates."""
    outputs: np.ndarray
    """(n, 1 + 2 * levels, horizon) forecasts, lower and upper bounds in price units (`output_names`)."""
    levels: tuple[str, ...]
    """The interval levels of `outputs`, in order."""
    skill: dict[str, Any]
    """The answer's `skill`: the version's evidence and `served_as`."""

    def named_outputs(self) -> dict[str, np.ndarray]:
        """Each output row across the batch, by name: (n, horizon) arrays in price units."""
        names = output_names(self.levels)
        return {name: self.outputs[:, index, :] for index, name in enumerate(names)}

    @property
    def calendar(self) -> str:
        """The trading calendar the version's forecast dates follow."""
        return str(self.served.metadata.get("calendar") or calendars.DEFAULT_CALENDAR)


def _naive_outputs(served: ServedVersion, windows: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    """The naive forecast with its conformal bands (calibrated at training time), shaped like `finish`'s output."""
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
    *,
    version: int | None = None,
    alias: str | None = None,
    where: str | Sequence[str] = "windows",
) -> Forecasts:
    """Look the version up, check the windows against it, forecast them in one micro-batched call.

    `windows` is a sequence of request windows (rows, arrays, or 2-D
    arrays) or one finite (n, rows, columns) array. Errors name each window
    as `where[index]`, or by its own name when `where` is a sequence.
    """
    served, served_as = await registry.resolve(model, version=version, alias=alias)
    spec = served.model.spec
    if isinstance(windows, np.ndarray) and windows.ndim == 3:
        values = windows_to_array(windows, spec, where if isinstance(where, str) else "windows")
        last_dates: list[dt.date | None] = [None] * len(values)
    else:
        names = [f"{where}[{index}]" for index in range(len(windows))] if isinstance(where, str) else where
        checked = [window_to_array(window, spec, where=name) for window, name in zip(windows, names, strict=True)]
        values = checked[0][0][None] if len(checked) == 1 else np.stack([array for array, _ in checked])
        last_dates = [day for _, day in checked]
    skill = {**served.skill, "served_as": served_as}
    if served_as == "unpromoted" and registry.settings.unpromoted_default == "naive":
        outputs, levels = _naive_outputs(served, values)
        skill.update(served_as="naive", beats_naive=False, ratio_to_naive=1.0)
    else:
        outputs, levels = await served.predict(values), served.model.interval_levels
    # Inputs in range give finite forecasts; this guards the answer's promise that every number is one.
    # The sum is finite exactly when every output is (barring an overflow, which the full check then
    # clears) and costs a third of `np.isfinite(...).all()` on the one-window outputs of /predict.
    if not math.isfinite(_total(outputs, None)) and not np.isfinite(outputs).all():
        index = int(np.argwhere(~np.isfinite(outputs))[0][0])
        name = f"{where}[{index}]" if isinstance(where, str) else where[index]
        raise WindowError(f"{name}: this window's forecast is not a finite number; its values are too extreme")
    return Forecasts(served=served, windows=values, last_dates=last_dates, outputs=outputs, levels=levels, skill=skill)


def forecast_steps(
    output: np.ndarray,
    levels: tuple[str, ...],
    last_date: dt.date | None,
    calendar: str = calendars.DEFAULT_CALENDAR,
) -> list[dict[str, Any]]:
    """One window's `CompiledModel.forecast` output (1 + 2 * levels, horizon) as response steps."""
    rows: list[list[float]] = output.tolist()
    forecast, lowers, uppers = rows[0], rows[1 : 1 + len(levels)], rows[1 + len(levels) :]
    horizon = len(forecast)
    dates: list[dt.date] | list[None] = (
        calendars.sessions_after(last_date, horizon, calendar) if last_date else [None] * horizon
    )
    return [
        {
            "step": step + 1,
            "date": dates[step],
            "close": forecast[step],
            "intervals": {
                level: {"lower": lowers[index][step], "upper": uppers[index][step]}
                for index, level in enumerate(levels)
            },
        }
        for step in range(horizon)
    ]


async def predict_one(registry: ModelRegistry, request: PredictRequest | ArrayWindowRequest) -> bytes:
    """Forecast one window with the requested (or default) version; the JSON answer."""
    found = await forecast_windows(
        registry, request.model, [request.window], version=request.version, alias=request.alias, where=("window",)
    )
    served, spec = found.served, found.served.model.spec
    return orjson.dumps(
        {
            "model": served.name,
            "version": served.version,
            "label": spec.label,
            "last_value": float(found.windows[0, -1, spec.label_index]),
            "forecast": forecast_steps(found.outputs[0], found.levels, found.last_dates[0], found.calendar),
            "skill": found.skill,
        }
    )


async def predict_many(
    registry: ModelRegistry, request: BatchPredictRequest, max_windows: int = default("max_batch_windows")
) -> bytes:
    """Forecast many windows in one inference call; the JSON answer."""
    if len(request.windows) > max_windows:
        raise WindowError(f"windows: at most {max_windows} windows per request, got {len(request.windows)}")
    found = await forecast_windows(
        registry, request.model, request.windows, version=request.version, alias=request.alias, where="windows"
    )
    served = found.served
    return orjson.dumps(
        {
            "model": served.name,
            "version": served.version,
            "label": served.model.spec.label,
            "forecasts": [
                forecast_steps(found.outputs[index], found.levels, found.last_dates[index], found.calendar)
                for index in range(len(found.windows))
            ],
            "skill": found.skill,
        }
    )


__all__ = ["FORECAST", "Forecasts", "forecast_steps", "forecast_windows", "output_names", "predict_many", "predict_one"]
