"""Forecasts."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body

from app.api.deps import RegistryDep, SettingsDep
from app.examples import BATCH_EXAMPLES, PREDICT_EXAMPLES
from app.forecasting import predict_many, predict_one
from app.schemas import BatchPredictRequest, BatchPredictResponse, PredictRequest, PredictResponse

router = APIRouter(tags=["predict"])

ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "Unknown model, version or alias."},
    422: {"description": "The window is malformed or does not fit the model's shape; the detail says how."},
}


@router.post("/predict", response_model=PredictResponse, responses=ERRORS)
async def create_prediction(
    request: Annotated[PredictRequest, Body(openapi_examples=PREDICT_EXAMPLES)], registry: RegistryDep
) -> PredictResponse:
    """Forecast the next `horizon` values from one window of recent prices (oldest first)."""
    return await predict_one(registry, request)


@router.post("/predict/batch", response_model=BatchPredictResponse, responses=ERRORS)
async def create_batch_prediction(
    request: Annotated[BatchPredictRequest, Body(openapi_examples=BATCH_EXAMPLES)],
    registry: RegistryDep,
    settings: SettingsDep,
) -> BatchPredictResponse:
    """Forecast many windows in one request (one inference call)."""
    return await predict_many(registry, request, max_windows=settings.max_batch_windows)
