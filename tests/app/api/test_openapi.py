"""The OpenAPI document matches what the service answers: every status code a route can give is
documented, with the project's error schemas, and real answers fit the documented schemas."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.helpers import WINDOW_ROWS, assert_documented, sample_rows, wait_job
from training.store import ModelStore

# Every route and the status codes it can answer with (besides a logged 500). Every route that needs a key
# can answer 401; every route that needs an `admin` key also 403 (a `predict` key) and 429 (the rate limit).
KEY, ADMIN = {401}, {401, 403, 429}
EXPECTED_CODES: dict[tuple[str, str], set[int]] = {
    ("post", "/predict"): {200, 404, 409, 422, 500, 503} | KEY,
    ("post", "/predict/batch"): {200, 404, 409, 422, 500, 503} | KEY,
    ("get", "/health"): {200},
    ("get", "/ready"): {200, 404, 422, 503},
    ("get", "/metrics"): {200} | KEY,
    ("get", "/models"): {200} | KEY,
    ("get", "/models/{name}"): {200, 404, 422} | KEY,
    ("get", "/models/{name}/versions/{version}"): {200, 404, 409, 422} | KEY,
    ("get", "/models/{name}/versions/{version}/report.png"): {200, 404, 409, 422, 500} | KEY,
    ("get", "/models/{name}/aliases"): {200, 404, 422} | KEY,
    # 409 with the forecast ledger off; 503 when its database cannot be read.
    ("get", "/models/{name}/monitoring"): {200, 404, 409, 422, 503} | KEY,
    ("get", "/models/{name}/monitoring.png"): {200, 404, 409, 422, 503} | KEY,
    ("put", "/models/{name}/aliases/{alias}"): {200, 400, 404, 409, 422} | ADMIN,
    # 503 in scaled-out mode when the database cannot be reached.
    ("put", "/models/{name}/schedule"): {200, 404, 422, 503} | ADMIN,
    ("get", "/models/{name}/schedule"): {200, 404, 422, 503} | KEY,
    ("delete", "/models/{name}/schedule"): {200, 404, 422, 503} | ADMIN,
    ("get", "/datasets"): {200} | KEY,
    ("post", "/datasets"): {201, 400, 409, 413, 422} | ADMIN,
    ("get", "/datasets/{name}"): {200, 404, 422} | KEY,
    # 415: neither JSON nor CSV; 503: another replica holds the dataset's lock (scaled out).
    ("post", "/datasets/{name}/rows"): {200, 404, 409, 413, 415, 422, 503} | ADMIN,
    # 409 (a job of the model already waits) and 503 (database unreachable) in scaled-out mode.
    ("post", "/train"): {202, 400, 404, 409, 422, 503} | ADMIN,
    ("get", "/jobs"): {200, 422, 503} | KEY,
    ("get", "/jobs/{job_id}"): {200, 404, 422, 503} | KEY,
    ("delete", "/jobs/{job_id}"): {200, 404, 409, 422, 503} | ADMIN,
    # The standard protocols (errors as ProtocolErrorPublic; 400 is V2's "not ready").
    ("get", "/v2"): {200} | KEY,
    ("get", "/v2/health/live"): {200},
    ("get", "/v2/health/ready"): {200, 400},
    ("get", "/v2/models/{name}/ready"): {200, 400, 404, 422} | KEY,
    ("get", "/v2/models/{name}/versions/{version}/ready"): {200, 400, 404, 422} | KEY,
    ("get", "/v2/models/{name}"): {200, 404, 409, 422, 503} | KEY,
    ("get", "/v2/models/{name}/versions/{version}"): {200, 404, 409, 422, 503} | KEY,
    ("post", "/v2/models/{name}/infer"): {200, 404, 409, 422, 500, 503} | KEY,
    ("post", "/v2/models/{name}/versions/{version}/infer"): {200, 404, 409, 422, 500, 503} | KEY,
    ("get", "/v1/models/{name}"): {200, 404, 422} | KEY,
    ("get", "/v1/models/{name}/versions/{version}"): {200, 404, 422} | KEY,
    ("get", "/v1/models/{name}/labels/{label}"): {200, 404, 409, 422, 503} | KEY,
    ("get", "/v1/models/{name}/metadata"): {200, 404, 409, 422, 503} | KEY,
    ("get", "/v1/models/{name}/versions/{version}/metadata"): {200, 404, 409, 422, 503} | KEY,
    ("get", "/v1/models/{name}/labels/{label}/metadata"): {200, 404, 409, 422, 503} | KEY,
    ("post", "/v1/models/{name}:predict"): {200, 404, 409, 422, 500, 503} | KEY,
    ("post", "/v1/models/{name}/versions/{version}:predict"): {200, 404, 409, 422, 500, 503} | KEY,
    ("post", "/v1/models/{name}/labels/{label}:predict"): {200, 404, 409, 422, 500, 503} | KEY,
}
# The standard protocols (KServe V2, TF Serving) answer errors in their own shape, `{"error": ...}`.
PROTOCOL_PREFIXES = ("/v1/", "/v2")
CSV = "Date,Open,High,Low,Close,Volume\n" + "".join(
    f"2020-01-{day:02d},{100 + day},{101 + day},{99 + day},{100.5 + day},{1000 * day}\n" for day in range(2, 30)
)


@pytest.fixture(scope="module")
def openapi(client: TestClient) -> dict[str, Any]:
    """The document the service publishes."""
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


def test_every_route_documents_the_codes_it_can_answer(openapi: dict[str, Any]) -> None:
    documented = {
        (method, path): {int(code) for code in operation["responses"]}
        for path, operations in openapi["paths"].items()
        for method, operation in operations.items()
    }
    assert documented == EXPECTED_CODES


def test_errors_are_documented_with_the_project_schemas(openapi: dict[str, Any]) -> None:
    for path, operations in openapi["paths"].items():
        for method, operation in operations.items():
            for code, response in operation["responses"].items():
                if int(code) < 400 or (path, code) == ("/ready", "503"):
                    continue
                if path.startswith(PROTOCOL_PREFIXES):
                    expected = "ProtocolErrorPublic"
                else:
                    expected = "ValidationErrorPublic" if code == "422" else "ErrorPublic"
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": f"#/components/schemas/{expected}"}, (method, path, code)
    assert "HTTPValidationError" not in openapi["components"]["schemas"]


# A body Starlette cannot read at all: it answers 400 before validation (schemathesis also met
# FastAPI's 400 "There was an error parsing the body" on the JSON routes, documented with it).
BROKEN_MULTIPART: dict[str, Any] = {
    "content": b"--b\r\nno headers, no end",
    "headers": {"content-type": "multipart/form-data; boundary=b"},
}


def test_real_answers_fit_the_documented_schemas(client: TestClient, openapi: dict[str, Any]) -> None:
    rows = sample_rows()
    calls: list[tuple[str, str, str, int, dict[str, Any]]] = [
        ("get", "/health", "/health", 200, {}),
        ("get", "/ready", "/ready", 200, {}),
        ("get", "/models", "/models", 200, {}),
        ("get", "/models/{name}", "/models/tiny", 200, {}),
        ("get", "/models/{name}", "/models/nope", 404, {}),
        ("get", "/models/{name}/versions/{version}", "/models/tiny/versions/1", 200, {}),
        ("get", "/models/{name}/versions/{version}", "/models/tiny/versions/9", 404, {}),
        ("get", "/models/{name}/versions/{version}", "/models/tiny/versions/one", 422, {}),
        ("get", "/models/{name}/aliases", "/models/tiny/aliases", 200, {}),
        ("get", "/models/{name}/aliases", "/models/nope/aliases", 404, {}),
        ("get", "/models/{name}/monitoring", "/models/tiny/monitoring", 200, {}),
        ("get", "/models/{name}/monitoring", "/models/nope/monitoring", 404, {}),
        ("get", "/models/{name}/monitoring", "/models/-bad/monitoring", 422, {}),
        ("put", "/models/{name}/aliases/{alias}", "/models/tiny/aliases/staging", 200, {"json": {"version": 2}}),
        ("put", "/models/{name}/aliases/{alias}", "/models/tiny/aliases/staging", 404, {"json": {"version": 7}}),
        ("put", "/models/{name}/aliases/{alias}", "/models/tiny/aliases/staging", 422, {"json": {"version": "x"}}),
        ("get", "/models/{name}/schedule", "/models/tiny/schedule", 404, {}),
        ("put", "/models/{name}/schedule", "/models/tiny/schedule", 200, {"json": {"dataset": "msft"}}),
        ("put", "/models/{name}/schedule", "/models/tiny/schedule", 404, {"json": {"dataset": "nope"}}),
        ("put", "/models/{name}/schedule", "/models/tiny/schedule", 422, {"json": {"dataset": "msft", "x": 1}}),
        ("get", "/models/{name}/schedule", "/models/tiny/schedule", 200, {}),
        ("delete", "/models/{name}/schedule", "/models/tiny/schedule", 200, {}),
        ("delete", "/models/{name}/schedule", "/models/tiny/schedule", 404, {}),
        ("post", "/predict", "/predict", 200, {"json": {"model": "tiny", "window": rows}}),
        ("post", "/predict", "/predict", 200, {"json": {"model": "tiny", "window": WINDOW_ROWS}}),
        ("post", "/predict", "/predict", 404, {"json": {"model": "nope", "window": WINDOW_ROWS}}),
        ("post", "/predict", "/predict", 422, {"json": {"model": "tiny", "window": WINDOW_ROWS[:3]}}),
        ("post", "/predict", "/predict", 422, {"json": {"model": "tiny", "window": []}}),
        ("post", "/predict/batch", "/predict/batch", 200, {"json": {"model": "tiny", "windows": [rows, rows]}}),
        ("post", "/predict/batch", "/predict/batch", 422, {"json": {"model": "tiny", "windows": []}}),
        ("get", "/datasets", "/datasets", 200, {}),
        ("get", "/datasets/{name}", "/datasets/msft", 200, {}),
        ("get", "/datasets/{name}", "/datasets/nope", 404, {}),
        ("get", "/datasets/{name}", "/datasets/-bad", 422, {}),
        ("post", "/datasets", "/datasets", 201, {"files": {"file": ("a.csv", CSV)}, "data": {"name": "jan"}}),
        ("post", "/datasets", "/datasets", 409, {"files": {"file": ("a.csv", CSV)}, "data": {"name": "jan"}}),
        ("post", "/datasets", "/datasets", 422, {"files": {"file": ("a.csv", "x")}, "data": {"name": "feb"}}),
        ("post", "/datasets", "/datasets", 400, BROKEN_MULTIPART),
        ("post", "/train", "/train", 404, {"json": {"model": "m", "dataset": "nope"}}),
        ("post", "/train", "/train", 422, {"json": {"model": "m", "dataset": "jan", "epochs": 0}}),
        ("get", "/jobs", "/jobs", 200, {}),
        ("get", "/jobs", "/jobs", 422, {"params": {"limit": 0}}),
        ("get", "/jobs/{job_id}", "/jobs/nope", 404, {}),
        ("delete", "/jobs/{job_id}", "/jobs/nope", 404, {}),
    ]
    for method, template, path, status, arguments in calls:
        response = client.request(method.upper(), path, **arguments)
        assert response.status_code == status, (method, path, response.text)
        assert_documented(openapi, method, template, status, response.json())
    # A job: queued (202), cancelled (200), then cancelling it again is a conflict (409).
    accepted = client.post("/train", json={"model": "m", "dataset": "jan", "window": 5, "epochs": 1})
    assert accepted.status_code == 202, accepted.text
    assert_documented(openapi, "post", "/train", 202, accepted.json())
    job_id = accepted.json()["job_id"]
    cancelled = client.delete(f"/jobs/{job_id}")
    assert cancelled.status_code == 200, cancelled.text
    assert_documented(openapi, "delete", "/jobs/{job_id}", 200, cancelled.json())
    wait_job(client, job_id, ("cancelled",))
    again = client.delete(f"/jobs/{job_id}")
    assert again.status_code == 409 and again.json() == {"detail": f"job {job_id} already cancelled"}
    assert_documented(openapi, "delete", "/jobs/{job_id}", 409, again.json())
    assert_documented(openapi, "get", "/jobs/{job_id}", 200, client.get(f"/jobs/{job_id}").json())


def test_version_answer_is_the_stored_metadata(client: TestClient, model_store: ModelStore) -> None:
    stored = model_store.read_metadata("tiny", 1)
    # All of it but a server path that older versions recorded.
    stored["data"].pop("path", None)
    assert client.get("/models/tiny/versions/1").json() == stored


def test_models_answer_keeps_its_fields(client: TestClient) -> None:
    (tiny,) = [model for model in client.get("/models").json()["models"] if model["name"] == "tiny"]
    assert set(tiny) == {
        "name",
        "versions",
        "aliases",
        "champion",
        "default_version",
        "note",
        "serving_error",
        "serving",
    }
    assert set(tiny["versions"][0]) == {
        "version",
        "architecture",
        "window",
        "horizon",
        "features",
        "label",
        "created_at",
        "data",
        "test",
        "backtest",
        "backtest_coverage",
        "calendar",
        "trained_through",
        "skill",
        "gate_ratio_to_naive",
        "gate_basis",
    }
    assert set(tiny["versions"][0]["data"]) == {"name", "start", "end", "rows"}
