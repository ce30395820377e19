"""POST /predict and /predict/batch: the body parsed into windows, the core called, the JSON answer shaped.

The gateway answers every POST /predict with `answer` (`app.api.gateway`).
A body of arrays of numbers is decoded by orjson into one numpy array, and
accepted only where pydantic would accept it with the same values; every
other body goes through `PredictRequest`, so each error message comes from
one place. Rows become (array, dates) here; `forecast_windows` does the
rest, and the answer is plain lists and dicts encoded by orjson
(`PredictResponse` documents its shape). See docs/design.md, "Serving path".
"""

from __future__ import annotations

import contextlib
import datetime as dt
import operator
from collections.abc import Mapping
from typing import Any, TypeVar

import numpy as np
import orjson
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.types import Scope

from app.api.asgi import NUMBER_KINDS, PARSE_IN_THREAD_BYTES, JsonAnswer
from app.api.forecast_ids import keep
from app.api.schemas import ArrayWindowRequest, BatchPredictRequest, PredictRequest, PriceRow, VersionSelector
from app.core.config import default
from app.serving.forecasting import Forecasts, forecast_windows
from app.serving.registry import ModelRegistry
from app.serving.windows import ROW_COLUMNS, RowWindow, Window, WindowDates, WindowError
from training import calendars

Body = TypeVar("Body", bound=BaseModel)

_SELECTOR_KEYS = frozenset(VersionSelector.model_fields)
# Selectors already validated, by (model, version, alias): clients send the
# same few again and again. Bounded; cleared when full.
_SELECTORS: dict[tuple[str, int | None, str | None], VersionSelector] = {}
_MAX_SELECTORS = 1024
# One window sent without dates: the dates argument of /predict's arrays form, shared by every request.
_NO_DATES: tuple[None] = (None,)
_WHERE_ONE = ("window",)
_ARRAY_KEYS = frozenset({"window", "last_date"})
_ROW_VALUES = operator.attrgetter(*ROW_COLUMNS)


def parse_body(model: type[Body], raw: bytes) -> Body:
    """Validate raw JSON bytes as `model`; a 422 with `body.`-prefixed locations otherwise (FastAPI's own error)."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as error:
        errors = [{**item, "loc": ("body", *item["loc"])} for item in error.errors(include_url=False)]
        raise RequestValidationError(errors) from None


def parse_predict(raw: bytes) -> PredictRequest | ArrayWindowRequest:
    """The request in `raw`; a 422 naming the field if it is malformed."""
    fast = parse_array_window(raw)
    return fast if fast is not None else parse_body(PredictRequest, raw)


def parse_array_window(raw: bytes) -> ArrayWindowRequest | None:
    """An arrays-form request parsed without pydantic; None whenever pydantic should look at the body instead.

    orjson refuses NaN, Infinity and numbers that overflow a double, so
    every number this returns is finite and needs no second check.
    """
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if type(data) is not dict or "window" not in data or not data.keys() - _ARRAY_KEYS <= _SELECTOR_KEYS:
        return None
    window = data.pop("window")
    last_date = data.pop("last_date", None)
    if last_date is not None:
        try:
            last_date = dt.date.fromisoformat(last_date)
        except (TypeError, ValueError):
            # Not an ISO date: pydantic names the field.
            return None
    if type(window) is not list or not window or type(window[0]) is not list:
        return None
    try:
        values = np.array(window)
    except ValueError:
        # Ragged rows: pydantic accepts them and the shape check names the row.
        return None
    if values.ndim != 2 or values.dtype.kind not in NUMBER_KINDS:
        return None
    values = values.astype(np.float64, copy=False)
    # Plain JSON types only, so that validating the selector from Python
    # objects accepts exactly what validating it from JSON would.
    version, alias = data.get("version"), data.get("alias")
    if (
        type(data.get("model")) is not str
        or (version is not None and type(version) is not int)
        or (alias is not None and type(alias) is not str)
    ):
        return None
    selector = _selector(data)
    if selector is None:
        return None
    return ArrayWindowRequest(selector=selector, window=values, last_date=last_date)


def _selector(data: dict[str, object]) -> VersionSelector | None:
    """The validated selector for these keys (cached), or None if pydantic refuses it."""
    key = (data["model"], data.get("version"), data.get("alias"))
    selector = _SELECTORS.get(key)  # type: ignore[arg-type]
    if selector is None:
        try:
            selector = VersionSelector.model_validate(data)
        except ValidationError:
            return None
        if len(_SELECTORS) >= _MAX_SELECTORS:
            _SELECTORS.clear()
        _SELECTORS[key] = selector  # type: ignore[index]
    return selector


def parse_window(window: list[PriceRow] | list[list[float]]) -> tuple[Window, WindowDates]:
    """A validated request window as the core takes it: rows become (array of `ROW_COLUMNS`, their dates)."""
    if window and isinstance(window[0], PriceRow):
        rows: list[PriceRow] = window  # type: ignore[assignment]
        # pydantic has checked every named price and volume; a missing optional column becomes NaN.
        values = np.array([_ROW_VALUES(row) for row in rows], dtype=np.float64)
        return RowWindow(values), [row.date for row in rows]
    return window, None  # type: ignore[return-value]


def forecast_steps(
    output: np.ndarray,
    levels: tuple[str, ...],
    last_date: dt.date | None,
    calendar: str = calendars.DEFAULT_CALENDAR,
) -> list[dict[str, Any]]:
    """One window's output (1 + 2 * levels, horizon) as the answer's steps, dated by the version's calendar."""
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


def _calendar(found: Forecasts) -> str:
    """The trading calendar the version's forecast dates follow."""
    return calendars.calendar_of(found.served.metadata)


async def predict_one(
    registry: ModelRegistry, request: PredictRequest | ArrayWindowRequest, scope: Scope
) -> tuple[bytes, str]:
    """Forecast one window with the requested (or default) version; the JSON answer and its forecast id."""
    window: Window
    dates: tuple[WindowDates]
    if isinstance(request, ArrayWindowRequest):
        window, dates = request.window, _NO_DATES
    else:
        window, window_dates = parse_window(request.window)
        dates = (window_dates,)
    found = await forecast_windows(
        registry,
        request.model,
        [window],
        dates,
        version=request.version,
        alias=request.alias,
        where=_WHERE_ONE,
        origins=None if request.last_date is None else (request.last_date,),
    )
    served, spec = found.served, found.served.model.spec
    forecast_id = keep(scope, found)[0]
    body = orjson.dumps(
        {
            "model": served.name,
            "version": served.version,
            "label": spec.label,
            "last_value": float(found.windows[0, -1, spec.label_index]),
            "forecast": forecast_steps(found.outputs[0], found.levels, found.last_dates[0], _calendar(found)),
            "skill": found.skill,
            "forecast_id": forecast_id,
            "scorable": found.last_dates[0] is not None,
        }
    )
    return body, forecast_id


def parse_batch(raw: bytes, max_windows: int) -> BatchPredictRequest:
    """A /predict/batch body; a large one has its windows counted before pydantic builds a model of each row."""
    if len(raw) <= PARSE_IN_THREAD_BYTES:
        # Too small for pydantic to take long, and a second decode would cost every usual batch.
        return parse_body(BatchPredictRequest, raw)
    with contextlib.suppress(orjson.JSONDecodeError):
        data = orjson.loads(raw)
        windows = data.get("windows") if type(data) is dict else None
        if type(windows) is list:
            within_window_limit(len(windows), max_windows)
    return parse_body(BatchPredictRequest, raw)


def within_window_limit(count: int, max_windows: int) -> None:
    """Refuse more windows than one request may carry."""
    if count > max_windows:
        raise WindowError(f"windows: at most {max_windows} windows per request, got {count}")


async def predict_many(
    registry: ModelRegistry,
    request: BatchPredictRequest,
    scope: Scope,
    max_windows: int = default("max_batch_windows"),
) -> bytes:
    """Forecast many windows in one inference call; the JSON answer."""
    within_window_limit(len(request.windows), max_windows)
    if request.last_dates is not None and len(request.last_dates) != len(request.windows):
        raise WindowError(
            f"last_dates: one date (or null) per window expected, {len(request.windows)} windows,"
            f" got {len(request.last_dates)} dates"
        )
    parsed = [parse_window(window) for window in request.windows]
    found = await forecast_windows(
        registry,
        request.model,
        [window for window, _ in parsed],
        [dates for _, dates in parsed],
        version=request.version,
        alias=request.alias,
        where="windows",
        origins=request.last_dates,
    )
    served, calendar = found.served, _calendar(found)
    forecast_ids = keep(scope, found)
    return orjson.dumps(
        {
            "model": served.name,
            "version": served.version,
            "label": served.model.spec.label,
            "forecasts": [
                forecast_steps(found.outputs[index], found.levels, found.last_dates[index], calendar)
                for index in range(len(found.windows))
            ],
            "skill": found.skill,
            "forecast_ids": forecast_ids,
        }
    )


async def answer(scope: Scope, path: Mapping[str, str | None], raw: bytes) -> JsonAnswer:
    """POST /predict, from its whole body `raw` (a direct answer of the gateway; `path` holds no parameters).

    Errors propagate: the gateway renders them as the app's exception handlers do.
    """
    body, forecast_id = await predict_one(scope["app"].state.registry, parse_predict(raw), scope)
    return JsonAnswer(body, extra=((b"x-forecast-id", forecast_id.encode("ascii")),))


__all__ = [
    "answer",
    "forecast_steps",
    "parse_array_window",
    "parse_batch",
    "parse_body",
    "parse_predict",
    "parse_window",
    "predict_many",
    "predict_one",
]
