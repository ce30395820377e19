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
from typing import Any

import numpy as np
import orjson

from app.api.schemas import ArrayWindowRequest, BatchPredictRequest, PredictRequest
from app.core.config import default
from app.serving.registry import ModelRegistry, ServedVersion
from app.serving.windows import WindowError, business_days_after, window_to_array


async def _served(
    registry: ModelRegistry, request: PredictRequest | ArrayWindowRequest | BatchPredictRequest
) -> ServedVersion:
    return await registry.get(request.model, version=request.version, alias=request.alias)


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
    served = await _served(registry, request)
    spec = served.model.spec
    values, last_date = window_to_array(request.window, spec)
    output = await served.predict(values[None, :, :])
    return orjson.dumps(
        {
            "model": served.name,
            "version": served.version,
            "label": spec.label,
            "last_value": float(values[-1, spec.label_index]),
            "forecast": forecast_steps(output[0], served.model.interval_levels, last_date),
        }
    )


async def predict_many(
    registry: ModelRegistry, request: BatchPredictRequest, max_windows: int = default("max_batch_windows")
) -> bytes:
    """Forecast many windows in one inference call; the JSON answer."""
    if len(request.windows) > max_windows:
        raise WindowError(f"windows: at most {max_windows} windows per request, got {len(request.windows)}")
    served = await _served(registry, request)
    spec = served.model.spec
    arrays, last_dates = zip(
        *(window_to_array(window, spec, where=f"windows[{index}]") for index, window in enumerate(request.windows)),
        strict=True,
    )
    output = await served.predict(np.stack(arrays))
    levels = served.model.interval_levels
    return orjson.dumps(
        {
            "model": served.name,
            "version": served.version,
            "label": spec.label,
            "forecasts": [forecast_steps(output[index], levels, last_dates[index]) for index in range(len(arrays))],
        }
    )


__all__ = ["forecast_steps", "predict_many", "predict_one"]
