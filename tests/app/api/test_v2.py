"""The Open Inference Protocol (V2) routes over the real app: metadata, readiness, infer in JSON and binary, errors.

Every forecast is compared with /predict's for the same window: the
protocols share its lookup, checks, batching and prices.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.api.gateway import DIRECT_ANSWERS
from app.core.errors import protocol_error_response
from tests.helpers import WINDOW, assert_documented, real_windows
from training.errors import StockcastError
from training.features import WindowSpec
from training.gate import headline_ratio
from training.store import ModelStore

# Equal to /predict's answer up to the float32 network's last bits: the version's engine can switch
# from the plain graph to XLA (compiled in the background) between the two requests.
EQUAL = 1e-6
FEATURES = ["open", "high", "low", "close", "volume"]
OUTPUTS = ["forecast", "lower_80", "lower_90", "lower_95", "upper_80", "upper_90", "upper_95"]
SPEC = WindowSpec(window=WINDOW, horizon=1, features=tuple(FEATURES), label="close")


def windows(count: int, dtype: type[np.floating[Any]] = np.float32) -> np.ndarray:
    """`count` real sample windows, rounded to `dtype` as a client holding that type sends them."""
    return real_windows(SPEC, count).astype(dtype)


def infer_body(values: np.ndarray, datatype: str = "FP32", **extra: Any) -> dict[str, Any]:
    """A JSON infer request with the window tensor's data flattened, as the spec's examples write it."""
    tensor = {"name": "window", "shape": list(values.shape), "datatype": datatype, "data": values.ravel().tolist()}
    return {"inputs": [tensor], **extra}


def binary_request(values: np.ndarray, header: dict[str, Any] | None = None) -> tuple[bytes, dict[str, str]]:
    """A Triton binary request: the JSON header, then the tensor's little-endian bytes."""
    raw = values.astype("<f4").tobytes()
    tensor = {
        "name": "window",
        "shape": list(values.shape),
        "datatype": "FP32",
        "parameters": {"binary_data_size": len(raw)},
    }
    head = json.dumps({"inputs": [tensor], **(header or {})}).encode()
    return head + raw, {"Inference-Header-Content-Length": str(len(head)), "content-type": "application/octet-stream"}


def predicted(client: TestClient, window: np.ndarray, **selector: Any) -> dict[str, Any]:
    """/predict's answer for one window sent as arrays (float64 values: exactly what V2 decoded)."""
    response = client.post("/predict", json={"model": "tiny", "window": window.astype(np.float64).tolist(), **selector})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def binary_outputs(response: Any) -> dict[str, np.ndarray]:
    """Decode a binary infer response: the JSON header's outputs with their bytes after it."""
    length = int(response.headers["Inference-Header-Content-Length"])
    header = json.loads(response.content[:length])
    arrays, offset = {}, length
    for output in header["outputs"]:
        size = output["parameters"]["binary_data_size"]
        arrays[output["name"]] = np.frombuffer(response.content[offset : offset + size], "<f8").reshape(output["shape"])
        offset += size
    assert offset == len(response.content)
    return arrays


def test_server_metadata_and_health(client: TestClient) -> None:
    assert client.get("/v2").json() == {"name": "stockcast", "version": "0.1.0", "extensions": ["binary_tensor_data"]}
    assert client.get("/v2/health/live").json() == {"live": True}
    ready = client.get("/v2/health/ready")
    assert ready.status_code == 200 and ready.json() == {"ready": True}


def test_model_metadata_describes_the_window_tensor_and_price_outputs(
    client: TestClient, model_store: ModelStore
) -> None:
    response = client.get("/v2/models/tiny")
    assert response.status_code == 200, response.text
    metadata = response.json()
    assert (
        metadata["name"] == "tiny" and metadata["versions"] == ["1", "2"] and metadata["platform"] == "stockcast_keras"
    )
    assert metadata["inputs"] == [
        {
            "name": "window",
            "datatype": "FP32",
            "shape": [-1, WINDOW, 5],
            "parameters": {"feature_order": ",".join(FEATURES), "accepted_datatypes": "FP32,FP64"},
        }
    ]
    assert metadata["outputs"] == [{"name": name, "datatype": "FP64", "shape": [-1, 1]} for name in OUTPUTS]
    parameters = metadata["parameters"]
    assert parameters["version"] == 1 and parameters["units"] == "price" and parameters["label"] == "close"
    mase, basis = headline_ratio(model_store.read_metadata("tiny", 1))
    assert (parameters["gate_ratio_to_naive"], parameters["gate_basis"]) == (mase, basis)
    pinned = client.get("/v2/models/tiny/versions/2").json()
    assert pinned["parameters"]["version"] == 2


def test_model_readiness(client: TestClient) -> None:
    assert client.get("/v2/models/tiny/ready").json() == {"name": "tiny", "ready": True}
    assert client.get("/v2/models/tiny/versions/1/ready").status_code == 200
    missing = client.get("/v2/models/nope/ready")
    assert missing.status_code == 404
    assert missing.json() == {"error": "unknown model 'nope'; models: ['tiny', 'tiny-h5']"}


def test_json_infer_of_one_window_equals_predict(real_client: TestClient) -> None:
    # On the real network: /predict equals the Keras model (test_predict.py), and V2 equals /predict.
    client = real_client
    (window,) = windows(1)
    response = client.post("/v2/models/tiny/infer", json=infer_body(window[None], id="req-7"))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model_name"] == "tiny" and answer["model_version"] == "1" and answer["id"] == "req-7"
    assert answer["parameters"]["units"] == "price" and "gate_ratio_to_naive" in answer["parameters"]
    outputs = {output["name"]: output for output in answer["outputs"]}
    assert list(outputs) == OUTPUTS
    assert outputs["forecast"]["shape"] == [1, 1] and outputs["forecast"]["datatype"] == "FP64"
    step = predicted(client, window)["forecast"][0]
    assert outputs["forecast"]["data"] == pytest.approx([step["close"]], rel=EQUAL)
    assert outputs["lower_90"]["data"] == pytest.approx([step["intervals"]["90"]["lower"]], rel=EQUAL)
    assert outputs["upper_95"]["data"] == pytest.approx([step["intervals"]["95"]["upper"]], rel=EQUAL)


def test_nested_fp64_data_with_outputs_selection(client: TestClient) -> None:
    (window,) = windows(1, np.float64)
    body = {
        "inputs": [{"name": "window", "shape": [1, WINDOW, 5], "datatype": "FP64", "data": window[None].tolist()}],
        "outputs": [{"name": "upper_80"}, {"name": "forecast"}],
    }
    response = client.post("/v2/models/tiny/infer", json=body)
    assert response.status_code == 200, response.text
    outputs = response.json()["outputs"]
    assert [output["name"] for output in outputs] == ["upper_80", "forecast"]
    step = predicted(client, window)["forecast"][0]
    assert outputs[1]["data"] == pytest.approx([step["close"]], rel=EQUAL)
    assert outputs[0]["data"] == pytest.approx([step["intervals"]["80"]["upper"]], rel=EQUAL)
    assert "id" not in response.json()


def test_binary_batch_equals_predict_window_by_window(client: TestClient) -> None:
    batch = windows(3)
    body, headers = binary_request(batch, {"parameters": {"binary_data_output": True}, "id": "b"})
    response = client.post("/v2/models/tiny/versions/2/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    arrays = binary_outputs(response)
    assert list(arrays) == OUTPUTS and arrays["forecast"].shape == (3, 1)
    for index, window in enumerate(batch):
        step = predicted(client, window, version=2)["forecast"][0]
        # One batch of three against three batches of one: float32 network, same to its precision.
        assert arrays["forecast"][index, 0] == pytest.approx(step["close"], rel=1e-5)
        assert arrays["lower_95"][index, 0] == pytest.approx(step["intervals"]["95"]["lower"], rel=1e-5)


def test_binary_and_json_outputs_mixed(client: TestClient) -> None:
    body, headers = binary_request(
        windows(1), {"outputs": [{"name": "forecast", "parameters": {"binary_data": True}}, {"name": "lower_80"}]}
    )
    response = client.post("/v2/models/tiny/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    length = int(response.headers["Inference-Header-Content-Length"])
    header = json.loads(response.content[:length])
    forecast, lower = header["outputs"]
    assert forecast["parameters"] == {"binary_data_size": 8} and "data" not in forecast
    assert len(lower["data"]) == 1
    (value,) = struct.unpack("<d", response.content[length:])
    assert lower["data"][0] < value


def test_alias_parameter_selects_the_version(client: TestClient) -> None:
    response = client.post("/v2/models/tiny/infer", json=infer_body(windows(1), parameters={"alias": "champion"}))
    assert response.status_code == 200 and response.json()["model_version"] == "1"


def _tensor(**changes: Any) -> dict[str, Any]:
    tensor = infer_body(windows(1))["inputs"][0]
    tensor.update(changes)
    return {"inputs": [tensor]}


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/v2/models/nope/infer", _tensor(), 404, "unknown model 'nope'; models: ['tiny', 'tiny-h5']"),
        ("/v2/models/tiny/versions/9/infer", _tensor(), 404, "model 'tiny' has no version 9; versions: [1, 2]"),
        ("/v2/models/tiny/versions/x/infer", _tensor(), 404, "model 'tiny' has no version x; versions: [1, 2]"),
        (
            "/v2/models/tiny/infer",
            {**_tensor(), "parameters": {"alias": "absent"}},
            404,
            "model 'tiny' has no alias 'absent'; aliases: {aliases}",
        ),
        (
            "/v2/models/tiny/versions/1/infer",
            {**_tensor(), "parameters": {"alias": "champion"}},
            422,
            "give either a version (in the path) or parameters.alias, not both",
        ),
        (
            "/v2/models/tiny/infer",
            _tensor(shape=[1, WINDOW - 1, 5], data=windows(1)[:, 1:].ravel().tolist()),
            422,
            "window[0]: expected 10 rows of [open, high, low, close, volume], got 9 rows",
        ),
        (
            "/v2/models/tiny/infer",
            _tensor(shape=[1, 5, WINDOW]),
            422,
            "window[0]: expected 10 rows of [open, high, low, close, volume], got 5 rows",
        ),
        (
            "/v2/models/tiny/infer",
            _tensor(data=[-1.0, *windows(1).ravel().tolist()[1:]]),
            422,
            "window[0][0].open: prices must be positive, got -1.0",
        ),
        (
            "/v2/models/tiny/infer",
            _tensor(name="x"),
            422,
            "inputs[0].name: this model takes one input 'window', got \"x\"",
        ),
        (
            "/v2/models/tiny/infer",
            _tensor(datatype="INT64"),
            422,
            "inputs[0].datatype: expected one of ['FP32', 'FP64'], got \"INT64\"",
        ),
        (
            "/v2/models/tiny/infer",
            _tensor(shape=[1, WINDOW, 6]),
            422,
            "inputs[0].data: shape [1, 10, 6] needs 60 numbers, got 50",
        ),
        (
            "/v2/models/tiny/infer",
            _tensor(shape=[WINDOW, 5]),
            422,
            "inputs[0]: expected shape [n, rows, columns] (n windows, oldest row first), got [10, 5]",
        ),
        (
            "/v2/models/tiny/infer",
            _tensor(data=["a"] * 50),
            422,
            "inputs[0].data: expected a non-empty tensor of numbers",
        ),
        (
            "/v2/models/tiny/infer",
            _tensor(data=[1e300] * 50),
            422,
            "inputs[0][0][0][0]: numbers must be finite, got inf",
        ),
        (
            "/v2/models/tiny/infer",
            {**_tensor(), "outputs": [{"name": "median"}]},
            422,
            f"outputs: unknown output(s) ['median']; this version's outputs: {OUTPUTS}",
        ),
        ("/v2/models/tiny/infer", {"inputs": []}, 422, "inputs: expected one input tensor 'window', got []"),
    ],
)
def test_errors_follow_predict_with_the_protocol_shape(
    client: TestClient, model_store: ModelStore, path: str, body: dict[str, Any], status: int, message: str
) -> None:
    response = client.post(path, json=body)
    assert response.status_code == status, response.text
    # Other modules may add aliases to the shared store.
    assert response.json() == {"error": message.format(aliases=sorted(model_store.aliases("tiny")))}


def test_invalid_json_is_a_422(client: TestClient) -> None:
    response = client.post("/v2/models/tiny/infer", content=b"{not json")
    assert response.status_code == 422
    assert response.json()["error"].startswith("request body: invalid JSON (")


@pytest.mark.parametrize(
    ("declared", "size_change", "message"),
    [
        (
            "abc",
            0,
            "Inference-Header-Content-Length: expected the JSON header's length in bytes (1 to {total}), got 'abc'",
        ),
        (
            None,
            4,
            "inputs[0].parameters.binary_data_size: shape [1, 10, 5] of FP32 needs 200 bytes, got 204"
            " (200 bytes of binary data in the body)",
        ),
    ],
)
def test_binary_framing_errors(client: TestClient, declared: str | None, size_change: int, message: str) -> None:
    values = windows(1)
    raw = values.astype("<f4").tobytes()
    tensor = {
        "name": "window",
        "shape": [1, WINDOW, 5],
        "datatype": "FP32",
        "parameters": {"binary_data_size": len(raw) + size_change},
    }
    head = json.dumps({"inputs": [tensor]}).encode()
    body = head + raw
    response = client.post(
        "/v2/models/tiny/infer", content=body, headers={"Inference-Header-Content-Length": declared or str(len(head))}
    )
    assert response.status_code == 422
    assert response.json() == {"error": message.format(total=len(body))}


def test_binary_nan_is_refused(client: TestClient) -> None:
    values = windows(1)
    values[0, 4, 3] = np.nan
    body, headers = binary_request(values)
    response = client.post("/v2/models/tiny/infer", content=body, headers=headers)
    assert response.status_code == 422
    assert response.json() == {"error": "inputs[0][0][4][3]: numbers must be finite, got nan"}


def test_trailing_binary_bytes_are_refused(client: TestClient) -> None:
    body, headers = binary_request(windows(1))
    response = client.post("/v2/models/tiny/infer", content=body + b"\0" * 8, headers=headers)
    assert response.status_code == 422
    assert response.json() == {
        "error": "binary data: 208 bytes after the JSON header, but the inputs' binary_data_size add up to 200"
    }


@pytest.mark.parametrize(
    ("path", "body", "headers", "status"),
    [
        ("/v2/models/tiny/infer", json.dumps(infer_body(windows(2), id="x")).encode(), {}, 200),
        ("/v2/models/tiny/versions/2/infer", *binary_request(windows(1)), 200),
        ("/v2/models/nope/infer", json.dumps(infer_body(windows(1))).encode(), {}, 404),
        ("/v2/models/tiny/versions/x/infer", json.dumps(infer_body(windows(1))).encode(), {}, 404),
        ("/v2/models/tiny/infer", b"[1]", {}, 422),
        ("/v1/models/tiny:predict", json.dumps({"instances": windows(2).tolist()}).encode(), {}, 200),
        ("/v1/models/tiny/versions/2:predict", json.dumps({"inputs": windows(1).tolist()}).encode(), {}, 200),
        ("/v1/models/tiny/labels/champion:predict", json.dumps({"instances": windows(1).tolist()}).encode(), {}, 200),
        ("/v1/models/tiny/labels/nope:predict", json.dumps({"instances": windows(1).tolist()}).encode(), {}, 404),
        ("/v1/models/tiny:predict", b"{}", {}, 422),
    ],
)
def test_the_gateway_answers_as_the_protocol_functions_do(
    client: TestClient, path: str, body: bytes, headers: dict[str, str], status: int
) -> None:
    """The gateway's direct answer against the protocol's own function, called on the same app (its one core)."""
    fast = client.post(path, content=body, headers=headers)
    assert fast.status_code == status, fast.text
    (route,) = [route for route in DIRECT_ANSWERS if route.pattern.fullmatch(path)]
    match = route.pattern.fullmatch(path)
    assert match is not None
    scope = {"app": client.app, "headers": [(key.lower().encode(), value.encode()) for key, value in headers.items()]}
    try:
        expected = client.portal.call(route.answer, scope, match.groupdict(), body)  # type: ignore[union-attr]
    except StockcastError as error:
        expected = protocol_error_response(error)
    assert expected.status_code == status
    expected_headers = dict(expected.raw_headers)
    assert fast.headers["content-type"] == expected_headers[b"content-type"].decode()
    if "Inference-Header-Content-Length" in fast.headers:
        length = expected_headers[b"inference-header-content-length"].decode()
        assert fast.headers["Inference-Header-Content-Length"] == length
        fast_arrays = binary_outputs(fast)
        expected_arrays = binary_outputs(httpx.Response(status, headers=fast.headers, content=bytes(expected.body)))
        assert list(fast_arrays) == list(expected_arrays)
        for name, values in fast_arrays.items():
            np.testing.assert_allclose(values, expected_arrays[name], rtol=1e-6)
    else:
        assert_same_json(fast.json(), json.loads(bytes(expected.body)))


def assert_same_json(left: Any, right: Any) -> None:
    """Equal JSON, numbers to float32 precision."""
    if isinstance(left, float):
        assert left == pytest.approx(right, rel=1e-6)
    elif isinstance(left, dict):
        assert list(left) == list(right)
        for key, value in left.items():
            assert_same_json(value, right[key])
    elif isinstance(left, list):
        assert len(left) == len(right)
        for one, other in zip(left, right, strict=True):
            assert_same_json(one, other)
    else:
        assert left == right


def test_answers_fit_the_documented_schemas(client: TestClient) -> None:
    openapi = client.get("/openapi.json").json()
    infer = json.dumps(infer_body(windows(2), id="d")).encode()
    binary_body, binary_headers = binary_request(windows(1), {"outputs": [{"name": "forecast"}]})
    calls: list[tuple[str, str, str, int, dict[str, Any]]] = [
        ("get", "/v2", "/v2", 200, {}),
        ("get", "/v2/health/live", "/v2/health/live", 200, {}),
        ("get", "/v2/health/ready", "/v2/health/ready", 200, {}),
        ("get", "/v2/models/{name}/ready", "/v2/models/tiny/ready", 200, {}),
        ("get", "/v2/models/{name}/ready", "/v2/models/nope/ready", 404, {}),
        ("get", "/v2/models/{name}/ready", "/v2/models/%2e%2e/ready", 422, {}),
        ("get", "/v2/models/{name}/versions/{version}/ready", "/v2/models/tiny-h5/versions/1/ready", 200, {}),
        ("get", "/v2/models/{name}", "/v2/models/tiny", 200, {}),
        ("get", "/v2/models/{name}/versions/{version}", "/v2/models/tiny/versions/3", 404, {}),
        ("post", "/v2/models/{name}/infer", "/v2/models/tiny/infer", 200, {"content": infer}),
        ("post", "/v2/models/{name}/infer", "/v2/models/tiny/infer", 422, {"content": b"[]"}),
        ("post", "/v2/models/{name}/infer", "/v2/models/nope/infer", 404, {"content": infer}),
        (
            "post",
            "/v2/models/{name}/versions/{version}/infer",
            "/v2/models/tiny/versions/1/infer",
            200,
            {"content": binary_body, "headers": binary_headers},
        ),
    ]
    for method, template, path, status, arguments in calls:
        response = client.request(method.upper(), path, **arguments)
        assert response.status_code == status, (method, path, response.text)
        if "Inference-Header-Content-Length" in response.headers:
            body = json.loads(response.content[: int(response.headers["Inference-Header-Content-Length"])])
        else:
            body = response.json()
        assert_documented(openapi, method, template, status, body)


def test_hostile_model_names_are_refused_by_the_name_rule(client: TestClient) -> None:
    rule = "use 1-64 letters, digits, '_', '-' or '.', starting with a letter or digit"
    for path in ("/v2/models/%2e%2e", "/v2/models/tiny%0A/versions/1/ready", "/v2/models/%2e%2e/infer"):
        response = client.request("POST" if path.endswith("infer") else "GET", path, content=b"{}")
        assert response.status_code == 422, path
        assert response.json()["error"].startswith("invalid model name "), path
        assert response.json()["error"].endswith(rule), path
