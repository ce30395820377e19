"""Turning a checked request into forecasts: the logic behind /predict."""

from __future__ import annotations

import numpy as np

from app.registry import ModelRegistry, ServedVersion
from app.schemas import BatchPredictRequest, BatchPredictResponse, PredictRequest, PredictResponse
from app.windows import WindowError, forecast_steps, interval_bounds, window_to_array


async def _served(registry: ModelRegistry, request: PredictRequest | BatchPredictRequest) -> ServedVersion:
    return await registry.get(request.model, version=request.version, alias=request.alias)


async def predict_one(registry: ModelRegistry, request: PredictRequest) -> PredictResponse:
    """Forecast one window with the requested (or default) version."""
    served = await _served(registry, request)
    spec = served.model.spec
    values, last_date = window_to_array(request.window, spec)
    inputs = values[None, :, :]
    predicted = await served.predict(inputs)
    bounds = interval_bounds(inputs, predicted, served.metadata, spec)
    first_bounds = {level: (lower[0], upper[0]) for level, (lower, upper) in bounds.items()}
    return PredictResponse(
        model=served.name,
        version=served.version,
        label=spec.label,
        last_value=float(values[-1, spec.label_index]),
        forecast=forecast_steps(predicted[0], first_bounds, last_date),
    )


async def predict_many(
    registry: ModelRegistry, request: BatchPredictRequest, max_windows: int = 1024
) -> BatchPredictResponse:
    """Forecast many windows in one inference call."""
    if len(request.windows) > max_windows:
        raise WindowError(f"windows: at most {max_windows} windows per request, got {len(request.windows)}")
    served = await _served(registry, request)
    spec = served.model.spec
    arrays, last_dates = zip(
        *(window_to_array(window, spec, where=f"windows[{index}]") for index, window in enumerate(request.windows)),
        strict=True,
    )
    inputs = np.stack(arrays)
    predicted = await served.predict(inputs)
    bounds = interval_bounds(inputs, predicted, served.metadata, spec)
    forecasts = [
        forecast_steps(
            predicted[index],
            {level: (lower[index], upper[index]) for level, (lower, upper) in bounds.items()},
            last_dates[index],
        )
        for index in range(len(arrays))
    ]
    return BatchPredictResponse(model=served.name, version=served.version, label=spec.label, forecasts=forecasts)


__all__ = ["predict_many", "predict_one"]
