"""TensorFlow Serving's REST API: model status, SignatureDef-shaped metadata, and :predict.

Bodies follow https://www.tensorflow.org/tfx/serving/api_rest: `instances`
(row format, one window per instance) or `inputs` (columnar) in, and
`predictions` or `outputs` of named tensors back. Version labels are
stockcast's aliases; errors are `{"error": message}`. JSON numbers are taken
as doubles (DT_DOUBLE), so a window gives exactly /predict's forecast. The
gate evidence sits in the metadata beside the signature, under `stockcast`.
The gateway answers :predict with `answer`. See docs/design.md.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson
from starlette.types import Scope

from app.api.asgi import JsonAnswer, parsed
from app.api.forecast_ids import keep
from app.api.protocols import common
from app.api.protocols.common import (
    INPUT_NAME,
    ProtocolError,
    checked_windows,
    model_parameters,
    number_array,
    output_names,
    parse_version,
    within_limit,
)
from app.serving.evidence import evidence_block
from app.serving.forecasting import Forecasts, forecast_windows
from app.serving.registry import ModelRegistry, ServedVersion
from training.files import check_name

SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
DTYPE = "DT_DOUBLE"


def parse_predict(body: bytes, max_windows: int) -> tuple[np.ndarray, bool, list[dt.date | None] | None]:
    """The windows of a :predict body as finite float64 (n, rows, columns), whether it was row format, origins.

    The origins come from the optional top-level `last_date`: one ISO date
    for every window, or a list with one date (or null) per window.
    """
    request = common.json_object(body, '"instances" or "inputs"')
    signature = request.get("signature_name", SIGNATURE)
    if signature != SIGNATURE:
        raise ProtocolError(f"signature_name: this model has one signature '{SIGNATURE}', got {signature!r}")
    unknown = sorted(request.keys() - {"signature_name", "instances", "inputs", "last_date"})
    if unknown:
        raise ProtocolError(f'request body: unknown keys {unknown}; expected "instances" or "inputs"')
    if ("instances" in request) == ("inputs" in request):
        raise ProtocolError('request body: give exactly one of "instances" (row format) or "inputs" (columnar format)')
    if "instances" in request:
        instances = request["instances"]
        if type(instances) is not list or not instances:
            raise ProtocolError("instances: expected a non-empty list, one window per instance")
        # Counted before any number is converted: an oversize body costs no more than its decoding.
        within_limit(instances, max_windows, "instances")
        if all(type(instance) is dict for instance in instances):
            instances = [_named(instance, f"instances[{index}]") for index, instance in enumerate(instances)]
        windows = checked_windows(number_array(instances, "instances"), "instances")
        return windows, True, common.origins(request.get("last_date"), len(windows), "last_date")
    inputs = request["inputs"]
    if type(inputs) is dict:
        inputs = _named(inputs, "inputs")
    if type(inputs) is list:
        within_limit(inputs, max_windows, "inputs")
    windows = checked_windows(number_array(inputs, "inputs"), "inputs")
    return windows, False, common.origins(request.get("last_date"), len(windows), "last_date")


def _named(tensors: dict[str, Any], where: str) -> Any:
    """The value of the one named input, `window`."""
    if tensors.keys() != {INPUT_NAME}:
        raise ProtocolError(f"{where}: this model takes one input '{INPUT_NAME}', got {sorted(tensors)}")
    return tensors[INPUT_NAME]


def encode_predictions(forecasts: Forecasts, row_format: bool, forecast_ids: list[str]) -> bytes:
    """`{"predictions": [{output: values}, ...]}` for row format, `{"outputs": {output: values}}` for columnar.

    `forecast_ids` (the ledger's id of each window's forecast) and `evidence`
    (the answer's evidence block, `app.serving.evidence`) sit beside them,
    where TF Serving clients ignore what they do not know.
    """
    names = output_names(forecasts.levels)
    evidence = evidence_block(forecasts.skill)
    named = {name: forecasts.outputs[:, index, :] for index, name in enumerate(names)}
    if row_format:
        rows = [{name: values[index] for name, values in named.items()} for index in range(len(forecasts.windows))]
        return orjson.dumps(
            {"predictions": rows, "forecast_ids": forecast_ids, "evidence": evidence},
            option=orjson.OPT_SERIALIZE_NUMPY,
        )
    columns = {name: np.ascontiguousarray(values) for name, values in named.items()}
    return orjson.dumps(
        {"outputs": columns, "forecast_ids": forecast_ids, "evidence": evidence}, option=orjson.OPT_SERIALIZE_NUMPY
    )


async def predict(
    registry: ModelRegistry,
    name: str,
    body: bytes,
    max_windows: int,
    scope: Scope,
    version_text: str | None = None,
    label: str | None = None,
) -> bytes:
    """POST /v1/models/{name}[/versions/{v}|/labels/{label}]:predict: the encoded answer."""
    check_name(name)  # the name comes from the path: refused before the body is read, as on every route
    version = parse_version(registry, name, version_text) if version_text is not None else None
    windows, row_format, origins = await parsed(body, parse_predict, body, max_windows)
    where = "instances" if row_format else "inputs"
    forecasts = await forecast_windows(
        registry, name, windows, version=version, alias=label, where=where, origins=origins
    )
    return encode_predictions(forecasts, row_format, keep(scope, forecasts))


async def answer(scope: Scope, path: Mapping[str, str | None], raw: bytes) -> JsonAnswer:
    """POST /v1/models/{name}[/versions/{version}|/labels/{label}]:predict (a direct answer of the gateway)."""
    state = scope["app"].state
    return JsonAnswer(
        await predict(
            state.registry,
            path["name"] or "",
            raw,
            state.settings.max_batch_windows,
            scope,
            version_text=path["version"],
            label=path["label"],
        )
    )


def version_status(versions: list[int], loaded: set[int]) -> dict[str, Any]:
    """GET /v1/models/{name}[/versions/{v}|/labels/{label}]: each version AVAILABLE (loaded) or END (not loaded).

    A version that is not loaded is loaded by the first request that names
    it; TF Serving's nearest state for that is END (not in memory).
    """
    return {
        "model_version_status": [
            {
                "version": str(version),
                "state": "AVAILABLE" if version in loaded else "END",
                "status": {"error_code": "OK", "error_message": ""},
            }
            for version in versions
        ]
    }


def _tensor_info(name: str, sizes: list[int]) -> dict[str, Any]:
    return {
        "dtype": DTYPE,
        "tensor_shape": {"dim": [{"size": str(size), "name": ""} for size in sizes], "unknown_rank": False},
        "name": name,
    }


def model_metadata(served: ServedVersion) -> dict[str, Any]:
    """GET .../metadata: the model spec, a SignatureDef of the input and named outputs, and the gate evidence."""
    spec = served.model.spec
    outputs = output_names(served.model.interval_levels)
    signature = {
        "inputs": {INPUT_NAME: _tensor_info(INPUT_NAME, [-1, spec.window, len(spec.features)])},
        "outputs": {output: _tensor_info(output, [-1, spec.horizon]) for output in outputs},
        "method_name": PREDICT_METHOD,
    }
    return {
        "model_spec": {"name": served.name, "signature_name": "", "version": str(served.version)},
        "metadata": {
            "signature_def": {"signature_def": {SIGNATURE: signature}},
            "stockcast": model_parameters(served),
        },
    }


__all__ = ["answer", "encode_predictions", "model_metadata", "parse_predict", "predict", "version_status"]
