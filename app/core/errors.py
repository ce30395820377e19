"""One place that turns errors into JSON answers, one renderer per shape.

The service's own routes answer `{"detail": message, ...}` (`error_response`,
`validation_error_response`); the standard inference protocols (KServe V2,
TF Serving) answer `{"error": message}` (`protocol_error_response`). Both
carry the error's own status code and headers. See docs/design.md.
"""

from __future__ import annotations

import logging
import math
import sqlite3
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from training.errors import StockcastError

logger = logging.getLogger("stockcast.errors")
# What a 500 says: never the exception, its message or a stack trace.
INTERNAL_ERROR = "internal error; see the server log"


class RetryLaterError(StockcastError):
    """A refusal that says, in `Retry-After`, when the same request may succeed."""

    status_code = 429

    def __init__(self, message: str, retry_after_seconds: float) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(max(1, math.ceil(retry_after_seconds)))}


def _location(loc: tuple[Any, ...]) -> str:
    # Drop pydantic's union tags ("rows"/"arrays": a window's two forms, right after `window` or a window's
    # index) so the path reads like the JSON the caller sent; a field named "rows" stays.
    parts = [
        str(part)
        for index, part in enumerate(loc)
        if part != "function-after[_one_selector()]"
        and not (
            part in ("rows", "arrays") and index > 0 and (loc[index - 1] == "window" or isinstance(loc[index - 1], int))
        )
    ]
    text = ""
    for part in parts:
        text += f"[{part}]" if part.isdigit() else (f".{part}" if text else part)
    return text


def describe_validation_errors(errors: list[dict[str, Any]]) -> str:
    """One readable sentence per problem: 'body.window[3].close: Input should be greater than 0'."""
    lines = []
    for error in errors[:10]:
        location = _location(tuple(error.get("loc", ())))
        lines.append(f"{location}: {error.get('msg', 'invalid')}" if location else str(error.get("msg")))
    more = len(errors) - 10
    return "; ".join(lines) + (f"; and {more} more" if more > 0 else "")


def error_response(error: StockcastError) -> JSONResponse:
    """A domain error as its answer: its own status code, `{"detail": message}`, and its `headers` if it has any."""
    headers: dict[str, str] | None = getattr(error, "headers", None)
    return JSONResponse(status_code=error.status_code, content={"detail": str(error)}, headers=headers)


def protocol_error_response(error: StockcastError | RequestValidationError) -> JSONResponse:
    """An error as the standard protocols answer it: `{"error": message}` with its status code and headers."""
    if isinstance(error, RequestValidationError):
        return JSONResponse(status_code=422, content={"error": describe_validation_errors(list(error.errors()))})
    headers: dict[str, str] | None = getattr(error, "headers", None)
    return JSONResponse(status_code=error.status_code, content={"error": str(error)}, headers=headers)


async def stockcast_error_handler(request: Request, error: Exception) -> JSONResponse:
    """Domain errors carry their own status code and a message saying what to fix."""
    assert isinstance(error, StockcastError)
    return error_response(error)


def validation_error_response(error: RequestValidationError) -> JSONResponse:
    """A request validation error as its answer: 422, a one-line summary and pydantic's structured errors."""
    errors = [{key: value for key, value in item.items() if key in ("loc", "msg", "type")} for item in error.errors()]
    return JSONResponse(status_code=422, content={"detail": describe_validation_errors(errors), "errors": errors})


async def validation_error_handler(request: Request, error: Exception) -> JSONResponse:
    """422 with a one-line summary plus pydantic's structured errors."""
    assert isinstance(error, RequestValidationError)
    return validation_error_response(error)


async def storage_error_handler(request: Request, error: Exception) -> JSONResponse:
    """The service's own files could not be read or written (read-only or full folder, broken database): 503.

    The detail names the problem, never the server path (OSError's text carries it).
    """
    logger.error("storage error on %s %s: %s", request.method, request.url.path, error)
    problem = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    return JSONResponse(
        status_code=503, content={"detail": f"the service cannot read or write its files: {problem}; retry later"}
    )


async def unexpected_error_handler(request: Request, error: Exception) -> JSONResponse:
    """Last resort: log the traceback, answer 500 without leaking internals."""
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse(status_code=500, content={"detail": INTERNAL_ERROR})


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers on an app."""
    app.add_exception_handler(StockcastError, stockcast_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(OSError, storage_error_handler)
    app.add_exception_handler(sqlite3.Error, storage_error_handler)
    app.add_exception_handler(Exception, unexpected_error_handler)
