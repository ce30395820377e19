"""The Open Inference Protocol (KServe V2) over REST, with Triton's binary tensor data extension.

Bodies follow the protocol's REST spec (kserve `docs/predict-api/v2/required_api.md`)
and Triton's `binary_tensor_data` extension, which `tritonclient.http` uses by
default: the JSON header, its length in `Inference-Header-Content-Length`,
then each binary tensor's raw little-endian bytes in input (or output) order.
This module decodes and encodes; the lookup, window checks, inference and
prices are the core's (`app.serving.forecasting.forecast_windows`). The
gateway answers infer requests with `answer`. See docs/design.md, "Serving path".
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from starlette.types import Scope

from app.api.asgi import JsonAnswer, parsed
from app.api.forecast_ids import keep
from app.api.protocols.common import (
    INPUT_NAME,
    ProtocolError,
    checked_windows,
    json_object,
    model_parameters,
    number_array,
    origins,
    output_names,
    parse_version,
)
from app.serving.evidence import v2_parameters
from app.serving.forecasting import Forecasts, forecast_windows
from app.serving.registry import ModelRegistry, ServedVersion
from training.config import upper_bound
from training.files import check_name

HEADER_LENGTH = "Inference-Header-Content-Length"
SERVER_NAME = "stockcast"
SERVER_VERSION = "0.1.0"
EXTENSIONS = ("binary_tensor_data",)
PLATFORM = "stockcast_keras"
# The datatypes a window may arrive in; FP32 is what the metadata declares.
INPUT_DATATYPES: dict[str, np.dtype[Any]] = {"FP32": np.dtype("<f4"), "FP64": np.dtype("<f8")}
# Prices and bounds leave in full precision, so they equal /predict's numbers.
OUTPUT_DATATYPE = "FP64"
_OUTPUT_DTYPE = np.dtype("<f8")
_HEADER_LENGTH = HEADER_LENGTH.lower().encode("latin-1")
_BINARY = (b"content-type", b"application/octet-stream")
# Bounds on a request's sizes, checked before anything is allocated: a window
# is at most as long, and has at most as many columns, as training allows.
MAX_WINDOW_ROWS = upper_bound("window")
MAX_FEATURES = upper_bound("features")
# A forecast and two bounds for each interval level: far fewer names than this.
MAX_OUTPUTS = 64
# Objects in a V2 request: the body, its input and parameters, each output and its parameters.
MAX_JSON_OBJECTS = 4 * MAX_OUTPUTS
_SHAPE_KEY = re.compile(rb'"shape"\s*:\s*\[')


@dataclass(frozen=True)
class RequestedOutput:
    """One entry of the request's `outputs`: which tensor, and whether as binary data."""

    name: str
    binary: bool


@dataclass(frozen=True)
class InferRequest:
    """A decoded inference request."""

    id: str | None
    alias: str | None
    windows: np.ndarray
    """(n, rows, columns) finite float64, decoded in the declared datatype."""
    outputs: list[RequestedOutput] | None
    """The outputs asked for; None for all of them."""
    binary_outputs: bool
    """`parameters.binary_data_output`: every output as binary unless it says otherwise."""
    origins: list[dt.date | None] | None = None
    """`parameters.last_date`: each window's last date, when the client sent it."""


def parse_infer_request(body: bytes, header_length: str | None, max_windows: int) -> InferRequest:
    """An inference request from the raw body (and the binary extension's header); 422 naming what is wrong."""
    header_bytes, binary = _split_body(body, header_length)
    _prescreen(bytes(header_bytes))
    header = json_object(header_bytes, "'inputs'")
    parameters = _parameters(header.get("parameters"), "parameters")
    inputs = header.get("inputs")
    if type(inputs) is not list or len(inputs) != 1 or type(inputs[0]) is not dict:
        raise ProtocolError(f"inputs: expected one input tensor '{INPUT_NAME}', got {_described(inputs)}")
    windows, used = _input_tensor(inputs[0], binary, max_windows)
    if used != len(binary):
        raise ProtocolError(
            f"binary data: {len(binary)} bytes after the JSON header, but the inputs' binary_data_size add up to {used}"
        )
    request_id = header.get("id")
    if request_id is not None and type(request_id) is not str:
        raise ProtocolError(f"id: expected a string, got {_described(request_id)}")
    alias = parameters.get("alias")
    if alias is not None and type(alias) is not str:
        raise ProtocolError(f"parameters.alias: expected a string, got {_described(alias)}")
    binary_outputs = parameters.get("binary_data_output", False)
    if type(binary_outputs) is not bool:
        raise ProtocolError(f"parameters.binary_data_output: expected true or false, got {_described(binary_outputs)}")
    return InferRequest(
        id=request_id,
        alias=alias,
        windows=windows,
        outputs=_requested_outputs(header.get("outputs"), binary_outputs),
        binary_outputs=binary_outputs,
        origins=origins(parameters.get("last_date"), len(windows), "parameters.last_date"),
    )


def _prescreen(header: bytes) -> None:
    """Refuse, from a scan of the bytes, the bodies whose decoding alone would hold the event loop.

    Decoding builds a Python object for every value, holding the GIL, so a
    body of a huge number of `{"name": ...}` objects or sizes stalls every
    request before any check can look at it. A V2 request has a few
    objects (one per input, output and parameters) and three sizes per
    shape, so a scan (no decoding) can tell these apart at once.
    """
    objects = header.count(b"{")
    if objects > MAX_JSON_OBJECTS:
        raise ProtocolError(
            f"request body: {objects} JSON objects, more than a V2 request has (at most {MAX_JSON_OBJECTS}:"
            " one per input, output and parameters)"
        )
    for found in _SHAPE_KEY.finditer(header, 0, len(header)):
        end = header.find(b"]", found.end())
        sizes = header[found.end() : end]
        if end != -1 and b"[" not in sizes and sizes.count(b",") + 1 > 8:
            raise ProtocolError(
                "inputs[0]: expected shape [n, rows, columns] (n windows, oldest row first), "
                f"got a list of {sizes.count(b',') + 1} sizes"
            )


def _split_body(body: bytes, header_length: str | None) -> tuple[bytes | memoryview, memoryview]:
    """The JSON header and the binary data after it (empty without the extension's header)."""
    if header_length is None:
        return body, memoryview(b"")
    length = int(header_length) if header_length.isascii() and header_length.isdigit() else -1
    if not 0 < length <= len(body):
        raise ProtocolError(
            f"{HEADER_LENGTH}: expected the JSON header's length in bytes (1 to {len(body)}), got '{header_length}'"
        )
    view = memoryview(body)
    return view[:length], view[length:]


def _described(value: Any) -> str:
    """A short description of an unexpected JSON value for an error message."""
    if type(value) in (list, dict) and len(value) > 60:
        # Only the start is shown: encoding the whole of a huge value would cost as much as the attack.
        value = value[:60] if type(value) is list else dict(list(value.items())[:60])
    return _clipped(orjson.dumps(value).decode())


def _clipped(text: str) -> str:
    """At most 60 characters of `text` for an error message."""
    return text if len(text) <= 60 else text[:57] + "..."


def _parameters(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if type(value) is not dict:
        raise ProtocolError(f"{where}: expected an object, got {_described(value)}")
    return value


def _checked_shape(shape: Any, max_windows: int, where: str) -> list[int]:
    """[n, rows, columns] with every size in bounds, checked before any size is multiplied or allocated."""
    if type(shape) is not list or len(shape) != 3:
        if type(shape) is not list:
            got = _described(shape)
        else:
            got = f"a list of {len(shape)} sizes" if len(shape) > 8 else _clipped(str(shape))
        raise ProtocolError(f"{where}: expected shape [n, rows, columns] (n windows, oldest row first), got {got}")
    if not all(type(size) is int for size in shape):
        raise ProtocolError(f"{where}.shape: expected a list of sizes [n, rows, columns], got {_described(shape)}")
    count, rows, columns = shape
    if count > max_windows:
        raise ProtocolError(f"{where} ('{INPUT_NAME}'): at most {max_windows} windows per request, got {count}")
    if not (count >= 1 and 1 <= rows <= MAX_WINDOW_ROWS and 1 <= columns <= MAX_FEATURES):
        raise ProtocolError(
            f"{where}.shape: expected [n, rows, columns] with n from 1 to {max_windows}, rows from 1 to "
            f"{MAX_WINDOW_ROWS} and columns from 1 to {MAX_FEATURES}, got {_clipped(str(shape))}"
        )
    return shape


def _input_tensor(tensor: dict[str, Any], binary: memoryview, max_windows: int) -> tuple[np.ndarray, int]:
    """The window tensor as finite float64 (n, rows, columns), and how many binary bytes it took."""
    where = "inputs[0]"
    if tensor.get("name") != INPUT_NAME:
        raise ProtocolError(
            f"{where}.name: this model takes one input '{INPUT_NAME}', got {_described(tensor.get('name'))}"
        )
    datatype = tensor.get("datatype")
    dtype = INPUT_DATATYPES.get(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        raise ProtocolError(f"{where}.datatype: expected one of {sorted(INPUT_DATATYPES)}, got {_described(datatype)}")
    shape = _checked_shape(tensor.get("shape"), max_windows, where)
    count = math.prod(shape)
    parameters = _parameters(tensor.get("parameters"), f"{where}.parameters")
    size = parameters.get("binary_data_size")
    if size is not None:
        if "data" in tensor:
            raise ProtocolError(f"{where}: give either data or parameters.binary_data_size, not both")
        if type(size) is not int or size != count * dtype.itemsize or size > len(binary):
            raise ProtocolError(
                f"{where}.parameters.binary_data_size: shape {shape} of {datatype} needs {count * dtype.itemsize} "
                f"bytes, got {_described(size)} ({len(binary)} bytes of binary data in the body)"
            )
        values = np.frombuffer(binary[:size], dtype=dtype).reshape(shape).astype(np.float64)
        return checked_windows(values, where), size
    if "data" not in tensor:
        raise ProtocolError(f"{where}: expected data or parameters.binary_data_size")
    values = number_array(tensor["data"], f"{where}.data")
    if values.size != count:
        raise ProtocolError(f"{where}.data: shape {shape} needs {count} numbers, got {values.size}")
    # Rounded to the declared datatype, so JSON and binary FP32 give the same
    # forecast; a number too large for it becomes inf, which the finiteness
    # check then names, so numpy need not warn.
    with np.errstate(over="ignore"):
        values = values.reshape(shape).astype(dtype).astype(np.float64, copy=False)
    return checked_windows(values, where), 0


def _requested_outputs(value: Any, binary_default: bool) -> list[RequestedOutput] | None:
    if value is None:
        return None
    if type(value) is not list or not value:
        raise ProtocolError(f'outputs: expected a non-empty list of {{"name": ...}}, got {_described(value)}')
    if len(value) > MAX_OUTPUTS:
        raise ProtocolError(f"outputs: at most {MAX_OUTPUTS} outputs may be asked for, got {len(value)}")
    requested = []
    seen: set[str] = set()
    for index, output in enumerate(value):
        name = output.get("name") if type(output) is dict else None
        if type(name) is not str:
            raise ProtocolError(f"outputs[{index}].name: expected an output name, got {_described(output)}")
        if name in seen:
            raise ProtocolError(f"outputs[{index}].name: '{_clipped(name)}' is asked for more than once")
        seen.add(name)
        parameters = _parameters(output.get("parameters"), f"outputs[{index}].parameters")
        unsupported = sorted(parameters.keys() - {"binary_data"})
        if unsupported:
            raise ProtocolError(f"outputs[{index}].parameters: not supported: {unsupported}")
        binary = parameters.get("binary_data", binary_default)
        if type(binary) is not bool:
            raise ProtocolError(f"outputs[{index}].parameters.binary_data: expected true or false")
        requested.append(RequestedOutput(name=name, binary=binary))
    return requested


def encode_infer_response(
    forecasts: Forecasts, request: InferRequest, forecast_ids: list[str]
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary tensors follow it (else None).

    The ledger's ids go in `parameters.forecast_ids`, one per window in
    order, joined by commas (a V2 parameter is a string, number or boolean);
    the answer's evidence block as `evidence_<key>` scalars (`app.serving.evidence`).
    """
    served = forecasts.served
    names = output_names(served.model.interval_levels)
    wanted = request.outputs or [RequestedOutput(name, request.binary_outputs) for name in names]
    unknown = [output.name for output in wanted if output.name not in names]
    if unknown:
        raise ProtocolError(f"outputs: unknown output(s) {unknown}; this version's outputs: {names}")
    # One copy puts every output's (n, horizon) block in one contiguous run of little-endian doubles.
    stacked = np.ascontiguousarray(forecasts.outputs.transpose(1, 0, 2), dtype=_OUTPUT_DTYPE)
    shape = list(stacked.shape[1:])
    tensors: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for output in wanted:
        values = stacked[names.index(output.name)]
        tensor: dict[str, Any] = {"name": output.name, "datatype": OUTPUT_DATATYPE, "shape": shape}
        if output.binary:
            blobs.append(values.tobytes())
            tensor["parameters"] = {"binary_data_size": len(blobs[-1])}
        else:
            tensor["data"] = values.ravel()
        tensors.append(tensor)
    answer: dict[str, Any] = {"model_name": served.name, "model_version": str(served.version)}
    if request.id is not None:
        answer["id"] = request.id
    answer["parameters"] = {
        **model_parameters(served),
        **v2_parameters(forecasts.skill),
        "forecast_ids": ",".join(forecast_ids),
    }
    answer["outputs"] = tensors
    header = orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


async def infer(
    registry: ModelRegistry,
    name: str,
    version_text: str | None,
    body: bytes,
    header_length: str | None,
    max_windows: int,
    scope: Scope,
) -> tuple[bytes, int | None]:
    """POST /v2/models/{name}[/versions/{v}]/infer: the encoded response (see `encode_infer_response`)."""
    check_name(name)  # the name comes from the path: refused before the body is read, as on every route
    version = parse_version(registry, name, version_text) if version_text is not None else None
    request = await parsed(body, parse_infer_request, body, header_length, max_windows)
    if version is not None and request.alias is not None:
        raise ProtocolError("give either a version (in the path) or parameters.alias, not both")
    forecasts = await forecast_windows(
        registry, name, request.windows, version=version, alias=request.alias, where=INPUT_NAME, origins=request.origins
    )
    return encode_infer_response(forecasts, request, keep(scope, forecasts))


async def answer(scope: Scope, path: Mapping[str, str | None], raw: bytes) -> JsonAnswer:
    """POST /v2/models/{name}[/versions/{version}]/infer (a direct answer of the gateway).

    JSON, or the JSON header and binary tensors with the header's length in
    `Inference-Header-Content-Length`. Errors propagate to the gateway.
    """
    header_length = next((value for key, value in scope["headers"] if key == _HEADER_LENGTH), None)
    state = scope["app"].state
    body, length = await infer(
        state.registry,
        path["name"] or "",
        path["version"],
        raw,
        header_length.decode("latin-1") if header_length is not None else None,
        state.settings.max_batch_windows,
        scope,
    )
    if length is None:
        return JsonAnswer(body)
    return JsonAnswer(body, _BINARY, ((_HEADER_LENGTH, str(length).encode("latin-1")),))


def server_metadata() -> dict[str, Any]:
    """GET /v2: the server's name, version and protocol extensions."""
    return {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": list(EXTENSIONS)}


def model_metadata(served: ServedVersion, versions: list[int]) -> dict[str, Any]:
    """GET /v2/models/{name}[/versions/{v}]: the input tensor, the named outputs and how to read them."""
    spec = served.model.spec
    outputs = output_names(served.model.interval_levels)
    return {
        "name": served.name,
        "versions": [str(version) for version in versions],
        "platform": PLATFORM,
        "inputs": [
            {
                "name": INPUT_NAME,
                "datatype": "FP32",
                "shape": [-1, spec.window, len(spec.features)],
                "parameters": {"feature_order": ",".join(spec.features), "accepted_datatypes": "FP32,FP64"},
            }
        ],
        "outputs": [{"name": output, "datatype": OUTPUT_DATATYPE, "shape": [-1, spec.horizon]} for output in outputs],
        "parameters": {"version": served.version, **model_parameters(served)},
    }


__all__ = [
    "HEADER_LENGTH",
    "InferRequest",
    "RequestedOutput",
    "answer",
    "encode_infer_response",
    "infer",
    "model_metadata",
    "parse_infer_request",
    "server_metadata",
]
