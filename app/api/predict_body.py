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
The window goes into numpy with `np.fromiter` over its flattened rows, half
the cost of `np.array` on the nested lists (which works out the shape and
the type first); `np.fromiter` would take strings and null too, so a count
of quotes and nulls in the raw body first proves the window holds neither.
"""

from __future__ import annotations

import itertools

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
_flatten = itertools.chain.from_iterable
# The bytes a window of numbers is written with.
_NUMBER_BYTES = b"0123456789.,+-eE[] \t\r\n"


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
    if type(window) is not list or not window or type(window[0]) is not list or not _only_numbers(raw, data):
        return None
    width = len(window[0])
    try:
        if len(set(map(len, window))) != 1:
            return None  # Ragged rows: pydantic accepts them and the shape check names the row.
        values = np.fromiter(_flatten(window), np.float64, len(window) * width).reshape(len(window), width)
    except (TypeError, ValueError):
        return None  # A row that is a number, or a value that is a list or an empty object.
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


def _only_numbers(raw: bytes, data: dict[str, object]) -> bool:
    """True when the window (already taken out of `data`) can hold no string, null, true or false.

    Every such token in the body is accounted for by the other keys: each
    key and string value brings two quote characters, each null value one
    `null`. Whatever else a string might contain (a quote, the word null)
    only raises the counts, which sends the body to pydantic, never the
    other way round. What the window can then hold is numbers, lists and
    empty objects, and `np.fromiter` refuses the last two. The counting runs
    on what is left once the characters of numbers and lists are deleted
    (a few dozen bytes of the usual 2 KB body): searching the whole body
    four times cost more than `np.fromiter` saves. Deleting `e` leaves
    `tru` and `fals` of true and false; deleting can only join pieces into
    more of these words, never hide one.
    """
    rest = raw.translate(None, _NUMBER_BYTES)
    strings = 1 + len(data) + sum(type(value) is str for value in data.values())  # 1: the "window" key
    nulls = sum(value is None for value in data.values())
    return (
        rest.count(b'"') == 2 * strings and rest.count(b"null") == nulls and b"tru" not in rest and b"fals" not in rest
    )


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
