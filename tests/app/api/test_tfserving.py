"""TensorFlow Serving's REST API over the real app, with request bodies written as TF Serving's REST docs show them.

Forecasts are compared with /predict's for the same window.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.helpers import WINDOW, assert_documented, real_windows
from training.features import WindowSpec
from training.gate import headline_ratio
from training.store import ModelStore

# Equal to /predict's answer up to the float32 network's last bits: the version's engine can switch
# from the plain graph to XLA (compiled in the background) between the two requests.
EQUAL = 1e-6
FEATURES = ("open", "high", "low", "close", "volume")
OUTPUTS = ["forecast", "lower_80", "lower_90", "lower_95", "upper_80", "upper_90", "upper_95"]
WINDOWS = real_windows(WindowSpec(window=WINDOW, horizon=1, features=FEATURES, label="close"), 3).tolist()


def predicted(client: TestClient, window: list[list[float]], **selector: Any) -> dict[str, Any]:
    """/predict's first step for one window sent as arrays."""
    response = client.post("/predict", json={"model": "tiny", "window": window, **selector})
    assert response.status_code == 200, response.text
    return response.json()["forecast"][0]  # type: ignore[no-any-return]


def test_row_format_one_instance_equals_predict(real_client: TestClient) -> None:
    # On the real network: /predict equals the Keras model (test_predict.py), and TF Serving equals /predict.
    client = real_client
    # As the docs' "Specifying input tensors in row format" example, with the one window as the instance.
    response = client.post(
        "/v1/models/tiny:predict", json={"signature_name": "serving_default", "instances": WINDOWS[:1]}
    )
    assert response.status_code == 200, response.text
    (prediction,) = response.json()["predictions"]
    assert list(prediction) == OUTPUTS
    step = predicted(client, WINDOWS[0])
    assert prediction["forecast"] == pytest.approx([step["close"]], rel=EQUAL)
    assert prediction["lower_80"] == pytest.approx([step["intervals"]["80"]["lower"]], rel=EQUAL)
    assert prediction["upper_95"] == pytest.approx([step["intervals"]["95"]["upper"]], rel=EQUAL)


def test_named_instances_and_columnar_inputs_agree(client: TestClient) -> None:
    rows = client.post("/v1/models/tiny:predict", json={"instances": [{"window": window} for window in WINDOWS]})
    columns = client.post("/v1/models/tiny:predict", json={"inputs": {"window": WINDOWS}})
    bare = client.post("/v1/models/tiny:predict", json={"inputs": WINDOWS})
    assert rows.status_code == columns.status_code == bare.status_code == 200, (rows.text, columns.text)
    outputs = columns.json()["outputs"]
    assert bare.json() == columns.json() and list(outputs) == OUTPUTS
    assert np.array(outputs["forecast"]).shape == (3, 1)
    for index, prediction in enumerate(rows.json()["predictions"]):
        assert prediction["forecast"] == outputs["forecast"][index]
        assert prediction["forecast"][0] == pytest.approx(predicted(client, WINDOWS[index])["close"], rel=1e-5)


def test_versions_and_labels_select_the_version(client: TestClient) -> None:
    body = {"instances": WINDOWS[:1]}
    pinned = client.post("/v1/models/tiny/versions/2:predict", json=body)
    labelled = client.post("/v1/models/tiny/labels/champion:predict", json=body)
    assert pinned.status_code == labelled.status_code == 200
    assert pinned.json()["predictions"][0]["forecast"] == pytest.approx(
        [predicted(client, WINDOWS[0], version=2)["close"]], rel=EQUAL
    )
    assert labelled.json()["predictions"][0]["forecast"] == pytest.approx(
        [predicted(client, WINDOWS[0], version=1)["close"]], rel=EQUAL
    )


def test_model_status(client: TestClient) -> None:
    client.post("/v1/models/tiny/versions/2:predict", json={"instances": WINDOWS[:1]})  # loads v2 as a pinned version
    status = client.get("/v1/models/tiny")
    assert status.status_code == 200
    ok = {"error_code": "OK", "error_message": ""}
    assert status.json() == {
        "model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": ok},
            {"version": "2", "state": "AVAILABLE", "status": ok},
        ]
    }
    assert client.get("/v1/models/tiny/labels/champion").json() == {
        "model_version_status": [{"version": "1", "state": "AVAILABLE", "status": ok}]
    }
    assert client.get("/v1/models/tiny/versions/2").json()["model_version_status"][0]["version"] == "2"


def test_metadata_is_a_signature_def_with_gate_evidence(client: TestClient, model_store: ModelStore) -> None:
    response = client.get("/v1/models/tiny/metadata")
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model_spec"] == {"name": "tiny", "signature_name": "", "version": "1"}
    signature = answer["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["method_name"] == "tensorflow/serving/predict"
    assert signature["inputs"]["window"] == {
        "dtype": "DT_DOUBLE",
        "tensor_shape": {
            "dim": [{"size": "-1", "name": ""}, {"size": "10", "name": ""}, {"size": "5", "name": ""}],
            "unknown_rank": False,
        },
        "name": "window",
    }
    assert list(signature["outputs"]) == OUTPUTS
    evidence = answer["metadata"]["stockcast"]
    mase, basis = headline_ratio(model_store.read_metadata("tiny", 1))
    assert (evidence["gate_ratio_to_naive"], evidence["gate_basis"], evidence["units"]) == (mase, basis, "price")
    assert evidence["features"] == ",".join(FEATURES)
    assert client.get("/v1/models/tiny/versions/2/metadata").json()["model_spec"]["version"] == "2"
    assert client.get("/v1/models/tiny/labels/champion/metadata").json()["model_spec"]["version"] == "1"


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/v1/models/nope:predict", {"instances": WINDOWS}, 404, "unknown model 'nope'; models: ['tiny', 'tiny-h5']"),
        (
            "/v1/models/tiny/versions/7:predict",
            {"instances": WINDOWS},
            404,
            "model 'tiny' has no version 7; versions: [1, 2]",
        ),
        (
            "/v1/models/tiny/labels/absent:predict",
            {"instances": WINDOWS},
            404,
            "model 'tiny' has no alias 'absent'; aliases: {aliases}",
        ),
        (
            "/v1/models/tiny:predict",
            {"instances": [window[:-1] for window in WINDOWS]},
            422,
            "instances[0]: expected 10 rows of [open, high, low, close, volume], got 9 rows",
        ),
        (
            "/v1/models/tiny:predict",
            {"inputs": {"window": [[[*row[:3], -row[3], row[4]] for row in window] for window in WINDOWS]}},
            422,
            "inputs[0][0].close: prices must be positive, got " + str(-WINDOWS[0][0][3]),
        ),
        (
            "/v1/models/tiny:predict",
            {"instances": WINDOWS, "inputs": WINDOWS},
            422,
            'request body: give exactly one of "instances" (row format) or "inputs" (columnar format)',
        ),
        (
            "/v1/models/tiny:predict",
            {"instances": []},
            422,
            "instances: expected a non-empty list, one window per instance",
        ),
        (
            "/v1/models/tiny:predict",
            {"instances": [{"x": WINDOWS[0]}]},
            422,
            "instances[0]: this model takes one input 'window', got ['x']",
        ),
        (
            "/v1/models/tiny:predict",
            {"instances": [[1.0, 2.0], [3.0]]},
            422,
            "instances: nested lists must be rectangular (every row the same length)",
        ),
        (
            "/v1/models/tiny:predict",
            {"instances": WINDOWS[0]},
            422,
            "instances: expected shape [n, rows, columns] (n windows, oldest row first), got [10, 5]",
        ),
        (
            "/v1/models/tiny:predict",
            {"signature_name": "other", "instances": WINDOWS},
            422,
            "signature_name: this model has one signature 'serving_default', got 'other'",
        ),
        (
            "/v1/models/tiny:predict",
            {"examples": []},
            422,
            'request body: unknown keys [\'examples\']; expected "instances" or "inputs"',
        ),
    ],
)
def test_errors_follow_predict_with_tf_serving_shape(
    client: TestClient, model_store: ModelStore, path: str, body: dict[str, Any], status: int, message: str
) -> None:
    response = client.post(path, json=body)
    assert response.status_code == status, response.text
    # Other modules may add aliases to the shared store.
    assert response.json() == {"error": message.format(aliases=sorted(model_store.aliases("tiny")))}


def test_unknown_model_status_is_404(client: TestClient) -> None:
    response = client.get("/v1/models/nope")
    assert response.status_code == 404
    assert response.json() == {"error": "unknown model 'nope'; models: ['tiny', 'tiny-h5']"}


def test_answers_fit_the_documented_schemas(client: TestClient) -> None:
    openapi = client.get("/openapi.json").json()
    rows, columns = {"json": {"instances": WINDOWS}}, {"json": {"inputs": {"window": WINDOWS}}}
    calls: list[tuple[str, str, str, int, dict[str, Any]]] = [
        ("get", "/v1/models/{name}", "/v1/models/tiny", 200, {}),
        ("get", "/v1/models/{name}", "/v1/models/nope", 404, {}),
        ("get", "/v1/models/{name}/versions/{version}", "/v1/models/tiny/versions/1", 200, {}),
        ("get", "/v1/models/{name}/labels/{label}", "/v1/models/tiny/labels/champion", 200, {}),
        ("get", "/v1/models/{name}/metadata", "/v1/models/tiny/metadata", 200, {}),
        ("get", "/v1/models/{name}/versions/{version}/metadata", "/v1/models/tiny/versions/1/metadata", 200, {}),
        ("get", "/v1/models/{name}/labels/{label}/metadata", "/v1/models/tiny/labels/x/metadata", 404, {}),
        ("post", "/v1/models/{name}:predict", "/v1/models/tiny:predict", 200, rows),
        ("post", "/v1/models/{name}:predict", "/v1/models/tiny:predict", 422, {"json": {}}),
        ("post", "/v1/models/{name}/versions/{version}:predict", "/v1/models/tiny/versions/1:predict", 200, columns),
        ("post", "/v1/models/{name}/labels/{label}:predict", "/v1/models/tiny/labels/champion:predict", 200, rows),
    ]
    for method, template, path, status, arguments in calls:
        response = client.request(method.upper(), path, **arguments)
        assert response.status_code == status, (method, path, response.text)
        assert_documented(openapi, method, template, status, response.json())
