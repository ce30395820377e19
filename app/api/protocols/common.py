"""What both standard protocols share: the input tensor, its checks, output names, version parsing, errors.

Both protocols describe a served version the same way: one input tensor
`window` of shape (n, window, features) in the version's feature order, raw
prices and volumes as a client sends them to /predict; and named outputs
(`output_names`) of shape (n, horizon): the forecast and the lower and upper
bound of each interval level, all in price units. Errors are `{"error": ...}`
(`app.core.errors.protocol_error_response`). See docs/design.md.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Coroutine, Sequence, Sized
from typing import Any

import numpy as np
import orjson
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from app.api.asgi import NUMBER_KINDS
from app.api.catalog import gate_evidence
from app.core.errors import protocol_error_response
from app.serving.registry import ModelRegistry, ServedVersion
from training.errors import NotFoundError, StockcastError

INPUT_NAME = "window"
FORECAST = "forecast"


class ProtocolError(StockcastError):
    """A request that does not follow the protocol: malformed JSON, tensor name, shape, datatype or size."""

    status_code = 422


class ProtocolRoute(APIRoute):
    """A route that answers errors as both protocols specify: `{"error": message}` with the status code.

    The codes and messages are those /predict answers with (`{"detail": ...}`
    there): 404 for an unknown model, version or alias, 422 for a malformed
    request, 503 while the inference process restarts.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """The usual handler, with domain and validation errors rendered as `{"error": ...}`."""
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except (StockcastError, RequestValidationError) as error:
                return protocol_error_response(error)

        return handle


def output_names(levels: Sequence[str]) -> list[str]:
    """Names of the rows of one window's output, in the order the inference process stacks them.

    `forecast`, then `lower_<level>` for every interval level, then `upper_<level>`.
    """
    return [FORECAST, *(f"lower_{level}" for level in levels), *(f"upper_{level}" for level in levels)]


def json_object(raw: bytes | memoryview, expected: str) -> dict[str, Any]:
    """A request body that must be one JSON object; a ProtocolError saying what was expected otherwise."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise ProtocolError(f"request body: invalid JSON ({error})") from None
    if type(value) is not dict:
        raise ProtocolError(f"request body: expected a JSON object with {expected}")
    return value


def parse_version(registry: ModelRegistry, name: str, text: str) -> int:
    """A version from a URL path segment; 404 as /predict words it when the model or version does not exist."""
    versions = registry.versions_of(name)
    version = int(text) if text.isascii() and text.isdigit() else None
    if version is None or version not in versions:
        raise NotFoundError(f"model '{name}' has no version {text}; versions: {versions}")
    return version


def number_array(data: Any, where: str) -> np.ndarray:
    """JSON numbers (nested lists of any depth) as a float64 array; 422 for anything else."""
    try:
        values = np.array(data)
    except ValueError:
        raise ProtocolError(f"{where}: nested lists must be rectangular (every row the same length)") from None
    if values.dtype.kind not in NUMBER_KINDS or values.size == 0:
        raise ProtocolError(f"{where}: expected a non-empty tensor of numbers")
    return values.astype(np.float64, copy=False)


def checked_windows(values: np.ndarray, where: str) -> np.ndarray:
    """A (n, rows, columns) tensor of finite numbers, n >= 1; the window checks of /predict come after."""
    if values.ndim != 3 or len(values) == 0:
        raise ProtocolError(
            f"{where}: expected shape [n, rows, columns] (n windows, oldest row first), got {list(values.shape)}"
        )
    finite = np.isfinite(values)
    if not finite.all():
        window, row, column = np.argwhere(~finite)[0]
        raise ProtocolError(
            f"{where}[{window}][{row}][{column}]: numbers must be finite, got {values[window, row, column]}"
        )
    return values


def within_limit(windows: Sized, max_windows: int, where: str) -> Sized:
    """The windows (an array, or the request's list of them), unless there are more than one request may carry."""
    if len(windows) > max_windows:
        raise ProtocolError(f"{where}: at most {max_windows} windows per request, got {len(windows)}")
    return windows


def origins(value: Any, windows: int, where: str) -> list[dt.date | None] | None:
    """The last date of each window from a request's `last_date`: one ISO date for all, or one (or null) each.

    A V2 parameter must be a string, so there "one each" is the dates
    joined by commas.
    """
    if value is None:
        return None
    if type(value) is str and "," in value:
        value = value.split(",")
    elif type(value) is str:
        return [_iso_date(value, where)] * windows
    if type(value) is list and len(value) == windows:
        return [None if day is None else _iso_date(day, f"{where}[{index}]") for index, day in enumerate(value)]
    raise ProtocolError(
        f"{where}: expected one ISO date (YYYY-MM-DD) for every window, or {windows} dates, one per window"
        f" (a list, or joined by commas); got {_kind(value)}"
    )


def _iso_date(value: Any, where: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value.strip() if type(value) is str else value)
    except (TypeError, ValueError):
        raise ProtocolError(f"{where}: expected an ISO date (YYYY-MM-DD), got {value!r:.40}") from None


def _kind(value: Any) -> str:
    return f"a list of {len(value)}" if type(value) is list else type(value).__name__


def model_parameters(served: ServedVersion) -> dict[str, str | int | float]:
    """What a caller needs to read the outputs, and the gate evidence, as flat scalar parameters.

    Scalars only: both protocols' parameter maps hold strings, numbers and
    booleans. Evidence not recorded for a version (None) is left out.
    """
    spec = served.model.spec
    evidence = {key: value for key, value in gate_evidence(served.metadata).items() if value is not None}
    return {
        "units": "price",
        "label": spec.label,
        "features": ",".join(spec.features),
        "horizon": spec.horizon,
        "interval_levels": ",".join(served.model.interval_levels),
        **evidence,
    }


__all__ = [
    "FORECAST",
    "INPUT_NAME",
    "ProtocolError",
    "ProtocolRoute",
    "checked_windows",
    "model_parameters",
    "number_array",
    "output_names",
    "parse_version",
    "within_limit",
]
