"""POST /predict and /predict/batch: parsed from raw bytes, answered with JSON encoded by orjson.

One handler, `answer_predict`, parses a /predict body once (the arrays form
with orjson and numpy, anything else with pydantic), looks the version up,
forecasts, and renders every error with the same functions as the app's
exception handlers. It has two entry points: the fast path in front of
FastAPI's routing (`app.api.predict_fast_path`), which answers every POST
/predict, and the FastAPI route below, which documents /predict in OpenAPI
and answers it when the fast path is switched off
(`STOCKCAST_PREDICT_FAST_PATH=false`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel

from app.api.asgi import JsonAnswer
from app.api.deps import registry_of, settings_of
from app.api.examples import BATCH_EXAMPLES, PREDICT_EXAMPLES
from app.api.json_body import documented_body, parse_body
from app.api.predict_body import parse_predict
from app.api.responses import error_responses
from app.api.schemas import BatchPredictRequest, BatchPredictResponse, PredictRequest, PredictResponse
from app.core.errors import error_response, validation_error_response
from app.serving.forecasting import predict_many, predict_one
from app.serving.registry import ModelRegistry
from training.errors import StockcastError

router = APIRouter(tags=["predict"])
Endpoint = TypeVar("Endpoint", bound=Callable[..., Awaitable[Response]])

# 404: unknown model, version or alias; 409: a pinned version that cannot be
# loaded; 422: a malformed window or one that does not fit the version; 500
# and 503: the inference process failed the batch or is restarting.
ERRORS: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/json": {}}},
    **error_responses(404, 409, 422, 500, 503),
}


def _post(
    path: str, answer: type[BaseModel], body: type[BaseModel], examples: dict[str, dict[str, Any]]
) -> Callable[[Endpoint], Endpoint]:
    """A POST route that parses `body` itself: its request schema and examples, its answer and errors documented."""
    return router.post(path, response_model=answer, responses=ERRORS, openapi_extra=documented_body(body, examples))


async def answer_predict(registry: ModelRegistry, raw: bytes) -> Response:
    """The /predict handler: one parse of the body, the forecast, and the answer or the error's answer.

    Errors get the answers the app's exception handlers give (`app.core.errors`);
    anything unexpected propagates to the app's logged 500.
    """
    try:
        answer = await predict_one(registry, parse_predict(raw))
    except StockcastError as error:
        return error_response(error)
    except RequestValidationError as error:
        return validation_error_response(error)
    return JsonAnswer(answer)


@_post("/predict", PredictResponse, PredictRequest, PREDICT_EXAMPLES)
async def create_prediction(request: Request) -> Response:
    """Forecast the next `horizon` values from one window of recent prices (oldest first)."""
    return await answer_predict(registry_of(request), await request.body())


@_post("/predict/batch", BatchPredictResponse, BatchPredictRequest, BATCH_EXAMPLES)
async def create_batch_prediction(request: Request) -> Response:
    """Forecast many windows in one request (one inference call)."""
    body = parse_body(BatchPredictRequest, await request.body())
    answer = await predict_many(registry_of(request), body, max_windows=settings_of(request).max_batch_windows)
    return JsonAnswer(answer)
