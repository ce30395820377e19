"""The standard protocols against the real service over real HTTP, with the real clients.

`tritonclient.http` (the most-used Open Inference Protocol client; it sends
and asks for Triton binary tensors by default) and plain HTTP for TF
Serving's REST API, against `uvicorn app.main:app` in a subprocess serving
the tiny test models. Every forecast is compared with /predict's.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.helpers import WINDOW, ServiceProcess, real_windows
from training.features import WindowSpec
from training.store import ModelStore

pytestmark = [pytest.mark.e2e, pytest.mark.tf]

# Equal to /predict's answer up to the float32 network's last bits: the version's engine can switch
# from the plain graph to XLA (compiled in the background) between the two requests.
EQUAL = 1e-6
SPEC = WindowSpec(window=WINDOW, horizon=1, features=("open", "high", "low", "close", "volume"), label="close")
# A client holding float32 prices: the V2 input's declared datatype.
WINDOWS = real_windows(SPEC, 3).astype(np.float32)


@pytest.fixture(scope="module")
def service(model_store: ModelStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """The service on the tiny models, for the whole module."""
    running = ServiceProcess(model_store.root, tmp_path_factory.mktemp("interop"))
    running.start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(service: ServiceProcess) -> Iterator[triton.InferenceServerClient]:
    """A tritonclient over HTTP."""
    connection = triton.InferenceServerClient(url=service.url.removeprefix("http://"))
    yield connection
    connection.close()


def predicted(service: ServiceProcess, window: np.ndarray, **selector: Any) -> dict[str, Any]:
    """/predict's first step for one window, sent as the float64 values the V2 input decoded to."""
    body = {"model": "tiny", "window": window.astype(np.float64).tolist(), **selector}
    response = httpx.post(f"{service.url}/predict", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["forecast"][0]  # type: ignore[no-any-return]


def window_input(values: np.ndarray, binary: bool = True) -> triton.InferInput:
    tensor = triton.InferInput("window", list(values.shape), "FP32")
    tensor.set_data_from_numpy(values, binary_data=binary)
    return tensor


def test_health_and_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.get_server_metadata()["extensions"] == ["binary_tensor_data"]
    assert client.is_model_ready("tiny")
    metadata = client.get_model_metadata("tiny")
    assert metadata["inputs"][0]["name"] == "window" and metadata["inputs"][0]["shape"] == [-1, WINDOW, 5]
    assert metadata["inputs"][0]["parameters"]["feature_order"] == "open,high,low,close,volume"
    assert [output["name"] for output in metadata["outputs"]][:2] == ["forecast", "lower_80"]
    assert metadata["parameters"]["units"] == "price"


def test_binary_infer_of_one_window_equals_predict(
    client: triton.InferenceServerClient, service: ServiceProcess
) -> None:
    window = WINDOWS[:1]
    result = client.infer("tiny", [window_input(window)])
    step = predicted(service, window[0])
    assert result.as_numpy("forecast").ravel().tolist() == pytest.approx([step["close"]], rel=EQUAL)
    assert result.as_numpy("lower_90").ravel().tolist() == pytest.approx([step["intervals"]["90"]["lower"]], rel=EQUAL)
    assert result.as_numpy("upper_95").ravel().tolist() == pytest.approx([step["intervals"]["95"]["upper"]], rel=EQUAL)
    response = result.get_response()
    assert response["model_version"] == "1" and response["parameters"]["label"] == "close"
    assert all("binary_data_size" in output["parameters"] for output in response["outputs"])


def test_json_infer_with_outputs_and_request_id(client: triton.InferenceServerClient, service: ServiceProcess) -> None:
    outputs = [triton.InferRequestedOutput("forecast", binary_data=False)]
    result = client.infer("tiny", [window_input(WINDOWS[:1], binary=False)], outputs=outputs, request_id="r-1")
    response = result.get_response()
    assert response["id"] == "r-1" and [output["name"] for output in response["outputs"]] == ["forecast"]
    assert response["outputs"][0]["data"] == pytest.approx([predicted(service, WINDOWS[0])["close"]], rel=EQUAL)


def test_batch_pinned_version_and_alias(client: triton.InferenceServerClient, service: ServiceProcess) -> None:
    assert not client.is_model_ready("tiny", "2")  # not loaded until a request names it
    batch = client.infer("tiny", [window_input(WINDOWS)], model_version="2")
    assert client.is_model_ready("tiny", "2")
    assert batch.get_response()["model_version"] == "2"
    forecast = batch.as_numpy("forecast")
    assert forecast.shape == (3, 1)
    for index, window in enumerate(WINDOWS):
        # One batch of three against three batches of one: equal to the float32 network's precision.
        assert forecast[index, 0] == pytest.approx(predicted(service, window, version=2)["close"], rel=1e-5)
    champion = client.infer("tiny", [window_input(WINDOWS[:1])], parameters={"alias": "champion"})
    assert champion.get_response()["model_version"] == "1"


@pytest.mark.parametrize(
    ("model", "version", "values", "status", "message"),
    [
        ("nope", "", WINDOWS, "404", "unknown model 'nope'; models: ['tiny', 'tiny-h5']"),
        ("tiny", "9", WINDOWS, "404", "model 'tiny' has no version 9; versions: [1, 2]"),
        (
            "tiny",
            "",
            WINDOWS[:, 2:],
            "422",
            "window[0]: expected 10 rows of [open, high, low, close, volume], got 8 rows",
        ),
    ],
)
def test_errors_reach_the_client(
    client: triton.InferenceServerClient, model: str, version: str, values: np.ndarray, status: str, message: str
) -> None:
    with pytest.raises(InferenceServerException) as raised:
        client.infer(model, [window_input(np.ascontiguousarray(values))], model_version=version)
    assert raised.value.status() == status
    assert raised.value.message() == message


def test_tf_serving_predict_over_http(service: ServiceProcess, model_store: ModelStore) -> None:
    # The row format of TF Serving's REST docs, one named input per instance.
    body = {"signature_name": "serving_default", "instances": [{"window": WINDOWS[0].tolist()}]}
    response = httpx.post(f"{service.url}/v1/models/tiny:predict", json=body, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["forecast"] == pytest.approx(
        [predicted(service, WINDOWS[0])["close"]], rel=EQUAL
    )
    missing = httpx.post(f"{service.url}/v1/models/tiny/labels/absent:predict", json=body, timeout=30)
    assert missing.status_code == 404
    aliases = sorted(model_store.aliases("tiny"))  # other modules may add aliases to the shared store
    assert missing.json() == {"error": f"model 'tiny' has no alias 'absent'; aliases: {aliases}"}


def test_service_log_has_no_tracebacks(service: ServiceProcess) -> None:
    assert "Traceback" not in Path(service.log_path).read_text(errors="replace")
