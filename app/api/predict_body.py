"""Parsing a /predict body: a fast path for the usual request, pydantic for everything else.

Trading back ends send the window as arrays of numbers in feature order.
For that form the body is decoded with orjson and the window converted to
one numpy array, which skips building and validating 200 Python floats one
by one (about half the cost of parsing, bench/serve.py with py-spy). The
fast path only accepts what pydantic would accept with the same values:
numbers in a rectangular list of lists, and no keys other than the version
selector's, which pydantic itself checks. Any other body (rows, strings,
nulls, NaN, ragged arrays, unknown keys, invalid JSON) goes through
`PredictRequest`, so every error message comes from one place.

Under load every microsecond here counts several times over (the event loop
is the service's bottleneck, bench/serve.py), so the fast path leans on
orjson's strictness: it refuses NaN, Infinity and numbers that overflow a
double, so every number it returns is finite and needs no second check.
"""

from __future__ import annotations

import numpy as np
import orjson
from pydantic import ValidationError

from app.api.json_body import parse_body
from app.api.schemas import ArrayWindowRequest, PredictRequest, VersionSelector

_SELECTOR_KEYS = frozenset(VersionSelector.model_fields)
# Selectors already validated, by (model, version, alias): clients send the
# same few again and again, and pydantic's validation of one was a tenth of
# the parsing time under load. Bounded; cleared when full.
_SELECTORS: dict[tuple[str, int | None, str | None], VersionSelector] = {}
_MAX_SELECTORS = 1024
# Integers and floats; numpy picks "f" for mixed rows, "i" for whole numbers.
_NUMBER_KINDS = frozenset("fi")


def parse_predict(raw: bytes) -> PredictRequest | ArrayWindowRequest:
    """The request in `raw`; a 422 naming the field if it is malformed."""
    fast = parse_array_window(raw)
    return fast if fast is not None else parse_body(PredictRequest, raw)


def parse_array_window(raw: bytes) -> ArrayWindowRequest | None:
    """An arrays-form request parsed without pydantic; None whenever pydantic should look at the body instead."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if type(data) is not dict or "window" not in data or not data.keys() - {"window"} <= _SELECTOR_KEYS:
        return None
    window = data.pop("window")
    if type(window) is not list or not window or type(window[0]) is not list:
        return None
    try:
        values = np.array(window)
    except ValueError:
        # Ragged rows: pydantic accepts them and the shape check names the row.
        return None
    if values.ndim != 2 or values.dtype.kind not in _NUMBER_KINDS:
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
    return ArrayWindowRequest(selector=selector, window=values) if selector is not None else None


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


__all__ = ["ArrayWindowRequest", "parse_array_window", "parse_predict"]
