"""POST /predict and /predict/batch as OpenAPI documents them; /predict/batch answered here.

POST /predict is answered by the gateway (`app.api.gateway.DIRECT_ANSWERS`
calls `app.api.predict.answer`) before routing, so its route here only
documents it: request schema, examples, answer and errors.
See docs/design.md, "Serving path".
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from app.api.asgi import AnsweredByGatewayError, JsonAnswer, parsed
from app.api.deps import registry_of, settings_of
from app.api.examples import BATCH_EXAMPLES, PREDICT_EXAMPLES
from app.api.json_body import documented_body
from app.api.predict import parse_batch, predict_many
from app.api.responses import error_responses
from app.api.schemas import BatchPredictRequest, BatchPredictResponse, PredictRequest, PredictResponse

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


@_post("/predict", PredictResponse, PredictRequest, PREDICT_EXAMPLES)
async def create_prediction(request: Request) -> Response:
    """Forecast the next `horizon` values from one window of recent prices (oldest first)."""
    raise AnsweredByGatewayError(request.url.path)


@_post("/predict/batch", BatchPredictResponse, BatchPredictRequest, BATCH_EXAMPLES)
async def create_batch_prediction(request: Request) -> Response:
    """Forecast many windows in one request (one inference call)."""
    raw, max_windows = await request.body(), settings_of(request).max_batch_windows
    body = await parsed(raw, parse_batch, raw, max_windows)
    answer = await predict_many(registry_of(request), body, request.scope, max_windows=max_windows)
    return JsonAnswer(answer)
