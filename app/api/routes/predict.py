"""Forecasts, parsed from raw bytes and answered with JSON encoded by orjson.

The usual /predict (window as arrays) is answered before it gets here, by
`app.api.predict_fast_path`; this route answers every other form, writes the
validation errors, and documents /predict in OpenAPI.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from app.api.deps import registry_of, settings_of
from app.api.examples import BATCH_EXAMPLES, PREDICT_EXAMPLES
from app.api.json_body import documented_body, parse_body
from app.api.predict_body import parse_predict
from app.api.responses import error_responses
from app.api.schemas import BatchPredictRequest, BatchPredictResponse, PredictRequest, PredictResponse
from app.serving.forecasting import predict_many, predict_one

router = APIRouter(tags=["predict"])

# 404: unknown model, version or alias; 409: a pinned version that cannot be
# loaded; 422: a malformed window or one that does not fit the version; 500
# and 503: the inference process failed the batch or is restarting.
ERRORS: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/json": {}}},
    **error_responses(404, 409, 422, 500, 503),
}


@router.post(
    "/predict",
    response_model=PredictResponse,
    responses=ERRORS,
    openapi_extra=documented_body(PredictRequest, PREDICT_EXAMPLES),
)
async def create_prediction(request: Request) -> Response:
    """Forecast the next `horizon` values from one window of recent prices (oldest first)."""
    answer = await predict_one(registry_of(request), parse_predict(await request.body()))
    return Response(answer, media_type="application/json")


@router.post(
    "/predict/batch",
    response_model=BatchPredictResponse,
    responses=ERRORS,
    openapi_extra=documented_body(BatchPredictRequest, BATCH_EXAMPLES),
)
async def create_batch_prediction(request: Request) -> Response:
    """Forecast many windows in one request (one inference call)."""
    body = parse_body(BatchPredictRequest, await request.body())
    answer = await predict_many(registry_of(request), body, max_windows=settings_of(request).max_batch_windows)
    return Response(answer, media_type="application/json")
