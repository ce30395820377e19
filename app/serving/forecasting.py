"""Turning a checked request into forecasts: the logic behind /predict.

Answers are built as plain lists and dicts straight from the inference
output and encoded with orjson: per request that is a few microseconds,
where building the response's pydantic models and dumping them cost several
times more on the event loop. `PredictResponse` and `BatchPredictResponse`
still document the shape (OpenAPI), and the tests validate real answers
against them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from app.api.schemas import ArrayWindowRequest, BatchPredictRequest, PredictRequest, PriceRow
from app.core.config import default
from app.serving.registry import ModelRegistry, ServedVersion
from app.serving.windows import WindowError, business_days_after, window_to_array, windows_to_array

# What a request may carry as one window (see `window_to_array`).
Window = list[PriceRow] | list[list[float]] | np.ndarray
FORECAST = "forecast"


def output_names(levels: Sequence[str]) -> list[str]:
    """Names of the rows of one window's output, in `ForecastSteps.finish` order.

    `forecast`, then `lower_<level>` for every interval level, then
    `upper_<level>`: the names the standard inference protocols give the
    output tensors (`app/api/protocols`).
    """
    return [FORECAST, *(f"lower_{level}" for level in levels), *(f"upper_{level}" for level in levels)]


@dataclass(frozen=True)
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

    def named_outputs(self) -> dict[str, np.ndarray]:
        """Each output row across the batch, by name: (n, horizon) arrays in price units."""
        names = output_names(self.served.model.interval_levels)
        return {name: self.outputs[:, index, :] for index, name in enumerate(names)}


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
    served = await registry.get(model, version=version, alias=alias)
    spec = served.model.spec
    if isinstance(windows, np.ndarray) and windows.ndim == 3:
        values = windows_to_array(windows, spec, where if isinstance(where, str) else "windows")
        last_dates: list[dt.date | None] = [None] * len(values)
    else:
        names = [f"{where}[{index}]" for index in range(len(windows))] if isinstance(where, str) else where
        checked = [window_to_array(window, spec, where=name) for window, name in zip(windows, names, strict=True)]
        values = checked[0][0][None] if len(checked) == 1 else np.stack([array for array, _ in checked])
        last_dates = [day for _, day in checked]
    outputs = await served.predict(values)
    if not np.isfinite(outputs).all():
        # Inputs in range give finite forecasts; this guards the answer's promise that every number is one.
        index = int(np.argwhere(~np.isfinite(outputs))[0][0])
        name = f"{where}[{index}]" if isinstance(where, str) else where[index]
        raise WindowError(f"{name}: this window's forecast is not a finite number; its values are too extreme")
    return Forecasts(served=served, windows=values, last_dates=last_dates, outputs=outputs)


def forecast_steps(output: np.ndarray, levels: tuple[str, ...], last_date: dt.date | None) -> list[dict[str, Any]]:
    """One window's `CompiledModel.forecast` output (1 + 2 * levels, horizon) as response steps."""
    rows: list[list[float]] = output.tolist()
    forecast, lowers, uppers = rows[0], rows[1 : 1 + len(levels)], rows[1 + len(levels) :]
    horizon = len(forecast)
    dates: list[dt.date] | list[None] = business_days_after(last_date, horizon) if last_date else [None] * horizon
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
            "forecast": forecast_steps(found.outputs[0], served.model.interval_levels, found.last_dates[0]),
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
    levels = served.model.interval_levels
    return orjson.dumps(
        {
            "model": served.name,
            "version": served.version,
            "label": served.model.spec.label,
            "forecasts": [
                forecast_steps(found.outputs[index], levels, found.last_dates[index])
                for index in range(len(found.windows))
            ],
        }
    )


__all__ = ["FORECAST", "Forecasts", "forecast_steps", "forecast_windows", "output_names", "predict_many", "predict_one"]
