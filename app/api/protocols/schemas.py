"""Response models of the standard protocols' routes, so OpenAPI documents every answer and error.

The inference answers are encoded by orjson (and, for binary tensors, as
raw bytes after the JSON header); these models document their JSON shape.
Parameter maps hold strings, numbers and booleans, as both protocols say.
See docs/design.md.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from app.api.responses import ERROR_DESCRIPTIONS

Scalar = str | int | float | bool


class ProtocolErrorPublic(BaseModel):
    """Every error of the standard protocols: `{"error": message}`, with /predict's status codes and messages."""

    error: str = Field(examples=["unknown model 'aapl'; models: ['msft']"])


NOT_READY = "Not ready: the protocol answers false with a 4xx; `error` says why."


def protocol_errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a protocol route: each status code it can answer with, all as `ProtocolErrorPublic`."""
    return {
        code: {"model": ProtocolErrorPublic, "description": NOT_READY if code == 400 else ERROR_DESCRIPTIONS[code]}
        for code in codes
    }


# Open Inference Protocol (V2) ------------------------------------------------------


class V2ServerMetadata(BaseModel):
    """GET /v2."""

    name: str
    version: str
    extensions: list[str]


class V2Live(BaseModel):
    """GET /v2/health/live."""

    live: bool


class V2Ready(BaseModel):
    """GET /v2/health/ready."""

    ready: bool


class V2ModelReady(BaseModel):
    """GET /v2/models/{name}[/versions/{v}]/ready."""

    name: str
    ready: bool


class V2TensorMetadata(BaseModel):
    """One input or output tensor: name, datatype and shape (-1: any batch size)."""

    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, Scalar] | None = None


class V2ModelMetadata(BaseModel):
    """GET /v2/models/{name}[/versions/{v}]: the window tensor in, prices and bounds out."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[V2TensorMetadata]
    outputs: list[V2TensorMetadata]
    parameters: dict[str, Scalar] = Field(
        description="version, units (price), label, features, horizon, interval_levels and the gate evidence."
    )


class V2OutputTensor(BaseModel):
    """One output: `data` (row-major, flattened) or, as binary, `parameters.binary_data_size` bytes after the header."""

    name: str
    datatype: Literal["FP64"]
    shape: list[int]
    parameters: dict[str, Scalar] | None = None
    data: list[float] | None = None


class V2InferResponse(BaseModel):
    """POST .../infer: forecasts and interval bounds in price units, one row per window."""

    model_name: str
    model_version: str
    id: str | None = None
    parameters: dict[str, Scalar] = Field(description="units, label, features, horizon and the gate evidence.")
    outputs: list[V2OutputTensor]


# TensorFlow Serving REST ---------------------------------------------------------------


class TFStatus(BaseModel):
    """A version's status code and message."""

    error_code: str
    error_message: str


class TFVersionStatus(BaseModel):
    """One version's state."""

    version: str
    state: Literal["AVAILABLE", "END"]
    status: TFStatus


class TFModelStatus(BaseModel):
    """GET /v1/models/{name}[/versions/{v}|/labels/{label}]."""

    model_version_status: list[TFVersionStatus]


class TFModelSpec(BaseModel):
    """Which model and version the metadata describes."""

    name: str
    signature_name: str
    version: str


class TFMetadata(BaseModel):
    """GET .../metadata: `metadata.signature_def` (a SignatureDefMap) and `metadata.stockcast` (gate evidence)."""

    model_spec: TFModelSpec
    metadata: dict[str, Any]


class TFPredictResponse(BaseModel):
    """POST ...:predict: `predictions` (row format: named outputs per instance) or `outputs` (columnar)."""

    predictions: list[dict[str, list[float]]] | None = None
    outputs: dict[str, list[list[float]]] | None = None
