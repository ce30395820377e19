"""The /predict arrays parser accepts exactly what pydantic accepts, with the same values, and nothing else."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from fastapi.exceptions import RequestValidationError

from app.api.predict import parse_body, parse_predict
from app.api.schemas import ArrayWindowRequest, PredictRequest
from app.core.errors import describe_validation_errors

ROW = [30.1, 31.0, 29.5, 30.7, 1_200_000.0]


def window(rows: int = 3) -> list[list[float]]:
    return [[value + index for value in ROW] for index in range(rows)]


def encoded(body: Any) -> bytes:
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    "body",
    [
        {"model": "msft", "window": window()},
        {"model": "msft", "version": 2, "window": window()},
        {"model": "msft", "alias": "champion", "window": window()},
        {"model": "msft", "version": None, "alias": None, "window": window()},
        {"model": "msft", "window": [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]]},
        {"model": "msft", "window": [[1.5, True, 3, 4, 0]]},
        {"model": "msft", "window": [[1.0, 2.0], [3.0, 4.0]]},
        {"model": "msft", "window": [[]]},
        {"model": "msft", "window": [[2**70, 1.0]]},
    ],
)
def test_the_arrays_parser_gives_what_pydantic_gives(body: dict[str, Any]) -> None:
    fast = parse_predict(encoded(body))
    assert isinstance(fast, ArrayWindowRequest)
    assert fast.window.dtype == np.float64
    reference = parse_body(PredictRequest, encoded(body))
    assert (fast.model, fast.version, fast.alias) == (reference.model, reference.version, reference.alias)
    np.testing.assert_array_equal(fast.window, np.array(reference.window, dtype=np.float64).reshape(fast.window.shape))


@pytest.mark.parametrize(
    "body",
    [
        {"model": "msft", "window": [{"open": 1, "high": 1, "low": 1, "close": 1, "volume": 0}]},
        {"model": "msft", "window": [["30.1", 31.0]]},
        {"model": "msft", "version": "2", "window": window()},
        {"model": "msft", "version": 2.0, "window": window()},
        {"model": "msft", "version": True, "window": window()},
        {"model": "msft", "window": [[True, False]]},
        {"model": "msft", "window": [[1.0, 2.0], [3.0]]},
        {"model": "msft", "window": [["1.5", "2.5"]]},
    ],
)
def test_unusual_but_valid_bodies_go_through_pydantic(body: dict[str, Any]) -> None:
    assert isinstance(parse_predict(encoded(body)), PredictRequest)


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (encoded({"model": "msft", "window": window(), "colour": "red"}), "body.colour: Extra inputs"),
        (encoded({"model": "../x", "window": window()}), "body.model: String should match pattern"),
        (encoded({"model": "msft", "version": 0, "window": window()}), "body.version: Input should be greater"),
        (encoded({"model": "msft", "version": 1, "alias": "a", "window": window()}), "either version or alias"),
        (encoded({"model": 7, "window": window()}), "body.model: Input should be a valid string"),
        (encoded({"model": "msft", "window": [[1.0, None]]}), "body.window[0][1]: Input should be a valid number"),
        (encoded({"model": "msft", "window": []}), "window must be a non-empty list"),
        (encoded({"model": "msft", "window": [[[1.0]]]}), "body.window[0][0]: Input should be a valid number"),
        (encoded({"model": "msft", "window": ["12", "34"]}), "window must be a non-empty list of rows"),
        (encoded({"model": "msft", "window": [[{}, 1.0]]}), "body.window[0][0]: Input should be a valid number"),
        (encoded({"model": "msft", "window": [[1.0], 2.0]}), "body.window[1]: Input should be a valid array"),
        (encoded({"model": 'ms"ft', "window": window()}), "body.model: String should match pattern"),
        (encoded({"window": window()}), "body.model: Field required"),
        (b'{"model": "msft", "window": [[NaN, 1.0]]}', "body.window[0][0]: Input should be a finite number"),
        (b'{"model": "msft", "window": [[1e400, 1.0]]}', "body.window[0][0]: Input should be a finite number"),
        (b'{"model": "msft", "window": [[1.0, -Infinity]]}', "body.window[0][1]: Input should be a finite number"),
        (b"[1, 2]", "body: Input should be an object"),
        (b"{not json", "JSON"),
    ],
)
def test_malformed_bodies_get_pydantic_s_message(raw: bytes, fragment: str) -> None:
    with pytest.raises(RequestValidationError) as caught:
        parse_predict(raw)
    assert fragment in describe_validation_errors(list(caught.value.errors()))


def test_validated_selectors_are_reused_and_refused_ones_stay_refused() -> None:
    first = parse_predict(encoded({"model": "msft", "version": 2, "window": window()}))
    again = parse_predict(encoded({"model": "msft", "version": 2, "window": window(4)}))
    other = parse_predict(encoded({"model": "msft", "alias": "champion", "window": window()}))
    assert isinstance(first, ArrayWindowRequest) and isinstance(again, ArrayWindowRequest)
    assert isinstance(other, ArrayWindowRequest)
    assert again.selector is first.selector
    assert (other.version, other.alias) == (None, "champion")
    for _ in range(2):
        with pytest.raises(RequestValidationError, match="pattern"):
            parse_predict(encoded({"model": "../x", "window": window()}))
