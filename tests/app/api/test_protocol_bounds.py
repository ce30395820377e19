"""Hostile protocol requests are refused on their sizes before any work: rank, dimensions, counts, outputs.

Each body here is small but declares an enormous tensor or answer; the old
parser multiplied the sizes, built the message or the answer first, and
froze the event loop or answered 500. Every refusal is a 422 naming the
field, from the parser alone (no model is needed to refuse a size).
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from app.api.protocols import tfserving, v2
from app.api.protocols.common import ProtocolError

MAX_WINDOWS = 1024
WINDOW = [[1.0, 1.1, 0.9, 1.0, 1000.0]] * 10


def infer(tensor: dict[str, Any], **extra: Any) -> bytes:
    """A V2 infer body with one input tensor."""
    return orjson.dumps({"inputs": [{"name": "window", "datatype": "FP32", **tensor}], **extra})


def refusal(body: bytes, header_length: str | None = None) -> str:
    """The 422 message the V2 parser answers for `body`."""
    with pytest.raises(ProtocolError) as raised:
        v2.parse_infer_request(body, header_length, MAX_WINDOWS)
    assert raised.value.status_code == 422
    return str(raised.value)


def test_a_shape_of_many_huge_sizes_is_refused_on_its_rank() -> None:
    # Finding 1: the product of 20,000 sizes of 10**9 was computed (quadratic in the list) before any check.
    message = refusal(infer({"shape": [10**9] * 20_000, "data": [1]}))
    assert message == (
        "inputs[0]: expected shape [n, rows, columns] (n windows, oldest row first), got a list of 20000 sizes"
    )


@pytest.mark.parametrize(
    ("tensor", "expected"),
    [
        # Finding 4: numpy's 64-dimension limit raised inside reshape (500).
        (
            {"shape": [1] * 65, "data": [1]},
            "inputs[0]: expected shape [n, rows, columns] (n windows, oldest row first), got a list of 65 sizes",
        ),
        # Finding 4: the 422 message printed a 4,320-digit byte count, past Python's int-to-text limit (500).
        (
            {"shape": [10**9] * 480, "data": [1]},
            "inputs[0]: expected shape [n, rows, columns] (n windows, oldest row first), got a list of 480 sizes",
        ),
        # Finding 4: a zero-size binary tensor of impossible shape reached reshape (500).
        (
            {"shape": [0, 2**62, 5], "parameters": {"binary_data_size": 0}},
            "inputs[0].shape: expected [n, rows, columns] with n from 1 to 1024, rows from 1 to 500 and columns"
            " from 1 to 16, got [0, 4611686018427387904, 5]",
        ),
        (
            {"shape": [1, 10**9, 5], "data": [1]},
            "inputs[0].shape: expected [n, rows, columns] with n from 1 to 1024, rows from 1 to 500 and columns"
            " from 1 to 16, got [1, 1000000000, 5]",
        ),
        (
            {"shape": [2_000, 10, 5], "data": [1]},
            "inputs[0] ('window'): at most 1024 windows per request, got 2000",
        ),
    ],
)
def test_impossible_shapes_are_refused_before_they_are_multiplied(tensor: dict[str, Any], expected: str) -> None:
    assert refusal(infer(tensor)) == expected


def test_a_binary_shape_is_bounded_like_a_json_one() -> None:
    header = infer({"shape": [10**9] * 480, "parameters": {"binary_data_size": 4}})
    message = refusal(header + b"\0\0\0\0", str(len(header)))
    assert message.endswith("got a list of 480 sizes")


def test_repeated_outputs_are_refused_before_the_answer_is_built() -> None:
    # Finding 2: 64,000 copies of one output name amplified a 2 MB request into a 1.2 GB answer.
    data = [value for row in WINDOW for value in row]
    many = infer({"shape": [1, 10, 5], "data": data}, outputs=[{"name": "forecast"}] * 100)
    assert refusal(many) == "outputs: at most 64 outputs may be asked for, got 100"
    twice = infer({"shape": [1, 10, 5], "data": data}, outputs=[{"name": "forecast"}, {"name": "forecast"}])
    assert refusal(twice) == "outputs[1].name: 'forecast' is asked for more than once"


def test_tf_serving_counts_instances_before_converting_them(monkeypatch: pytest.MonkeyPatch) -> None:
    # Finding 11: an oversize `instances` list was converted to numbers in full before the limit.
    def converted(*_: object) -> None:
        raise AssertionError("the windows were converted before they were counted")

    monkeypatch.setattr(tfserving, "number_array", converted)
    body = orjson.dumps({"instances": [WINDOW] * (MAX_WINDOWS + 1)})
    with pytest.raises(ProtocolError) as raised:
        tfserving.parse_predict(body, MAX_WINDOWS)
    assert str(raised.value) == f"instances: at most {MAX_WINDOWS} windows per request, got {MAX_WINDOWS + 1}"
    columnar = orjson.dumps({"inputs": {"window": [WINDOW] * (MAX_WINDOWS + 1)}})
    with pytest.raises(ProtocolError) as raised:
        tfserving.parse_predict(columnar, MAX_WINDOWS)
    assert str(raised.value) == f"inputs: at most {MAX_WINDOWS} windows per request, got {MAX_WINDOWS + 1}"


def test_a_well_formed_request_still_parses() -> None:
    data = [value for row in WINDOW for value in row]
    request = v2.parse_infer_request(
        infer({"shape": [1, 10, 5], "data": data}, outputs=[{"name": "forecast"}]), None, MAX_WINDOWS
    )
    assert request.windows.shape == (1, 10, 5)
    assert [output.name for output in request.outputs or []] == ["forecast"]


def test_a_batch_over_the_limit_is_counted_before_pydantic_builds_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # Finding 11: a 16 MiB /predict/batch was fully validated by pydantic (2 s, +464 MiB) before the limit.
    from app.api import predict
    from app.serving.windows import WindowError

    def validated(*_: object) -> None:
        raise AssertionError("pydantic validated the body before its windows were counted")

    monkeypatch.setattr(predict, "parse_body", validated)
    # Large enough to be worth counting first (40-row windows); small bodies go straight to pydantic.
    body = orjson.dumps({"model": "tiny", "windows": [WINDOW * 4] * (MAX_WINDOWS + 1)})
    with pytest.raises(WindowError) as refused:
        predict.parse_batch(body, MAX_WINDOWS)
    assert str(refused.value) == f"windows: at most {MAX_WINDOWS} windows per request, got {MAX_WINDOWS + 1}"


def test_large_bodies_are_parsed_off_the_event_loop() -> None:
    import asyncio
    import threading

    from app.api.asgi import PARSE_IN_THREAD_BYTES, parsed

    def where(_: bytes) -> int:
        return threading.get_ident()

    async def both() -> tuple[int, int, int]:
        small, large = b"x", b"x" * (PARSE_IN_THREAD_BYTES + 1)
        return threading.get_ident(), await parsed(small, where, small), await parsed(large, where, large)

    loop_thread, small_thread, large_thread = asyncio.run(both())
    assert small_thread == loop_thread and large_thread != loop_thread


def test_bodies_too_costly_to_decode_are_refused_from_a_scan_of_their_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    # Decoding 64,000 output objects or a shape of a million sizes holds the event loop for a tenth of a second
    # or more before any check; a scan of the bytes refuses them first.
    def decoded(*_: object) -> None:
        raise AssertionError("the body was decoded")

    monkeypatch.setattr(v2, "json_object", decoded)
    data = [value for row in WINDOW for value in row]
    many = infer({"shape": [1, 10, 5], "data": data}, outputs=[{"name": "forecast"}] * 64_000)
    assert refusal(many) == (
        "request body: 64002 JSON objects, more than a V2 request has (at most 256: one per input, output and"
        " parameters)"
    )
    huge = infer({"shape": [10**9] * 1_000_000, "data": [1]})
    assert refusal(huge) == (
        "inputs[0]: expected shape [n, rows, columns] (n windows, oldest row first), got a list of 1000000 sizes"
    )
