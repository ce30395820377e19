"""/models, aliases, readiness and health, in-process over the real app."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.helpers import sample_rows


def test_health_and_ready(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["models"] == {"tiny": 1, "tiny-h5": 1}


def test_models_lists_versions_aliases_and_default(client: TestClient) -> None:
    models = {model["name"]: model for model in client.get("/models").json()["models"]}
    assert set(models) == {"tiny", "tiny-h5"}
    tiny = models["tiny"]
    assert [version["version"] for version in tiny["versions"]] == [1, 2]
    assert tiny["champion"] == 1 and tiny["default_version"] == 1
    headline = tiny["versions"][0]
    assert headline["architecture"] == "lstm" and headline["window"] == 10
    assert headline["test"]["mae"] > 0 and headline["test"]["naive_mae"] > 0
    # No champion yet: the version with the lowest ratio to naive serves, and the listing says why.
    assert models["tiny-h5"]["champion"] is None and "lowest ratio to naive" in models["tiny-h5"]["note"]


def test_version_metadata_holds_the_scaler(client: TestClient) -> None:
    metadata = client.get("/models/tiny/versions/2").json()
    assert metadata["version"] == 2 and metadata["scaler"]["kind"] == "standard"
    assert len(metadata["scaler"]["feature_center"]) == 5


def test_unknown_model_and_version_are_404(client: TestClient) -> None:
    assert client.get("/models/nope").status_code == 404
    response = client.get("/models/tiny/versions/9")
    assert response.status_code == 404 and "has no version 9" in response.json()["detail"]


def test_alias_rollout_and_rollback_take_effect_at_once_and_are_logged(client: TestClient) -> None:
    rows = [[1.0 + i * 0.01, 1.1 + i * 0.01, 0.9 + i * 0.01, 1.0 + i * 0.01, 1000.0] for i in range(10)]
    moved = client.put("/models/tiny/aliases/champion", json={"version": 2, "reason": "try v2"})
    assert moved.status_code == 200, moved.text
    assert moved.json()["change"]["from"] == 1 and moved.json()["change"]["to"] == 2
    assert client.post("/predict", json={"model": "tiny", "window": rows}).json()["version"] == 2
    back = client.put("/models/tiny/aliases/champion", json={"version": 1, "reason": "rollback"})
    assert back.status_code == 200
    assert client.post("/predict", json={"model": "tiny", "window": rows}).json()["version"] == 1
    log = client.get("/models/tiny/aliases").json()["log"]
    assert [(entry["from"], entry["to"], entry["reason"]) for entry in log[-2:]] == [
        (1, 2, "try v2"),
        (2, 1, "rollback"),
    ]
    assert all(entry["at"] for entry in log)


def test_alias_errors(client: TestClient) -> None:
    missing = client.put("/models/tiny/aliases/champion", json={"version": 7})
    assert missing.status_code == 404 and "has no version 7" in missing.json()["detail"]
    bad_name = client.put("/models/tiny/aliases/Bad%20Alias", json={"version": 1})
    assert bad_name.status_code == 422 and "invalid alias" in bad_name.json()["detail"]
    bad_body = client.put("/models/tiny/aliases/staging", json={"version": "one"})
    assert bad_body.status_code == 422 and "body.version" in bad_body.json()["detail"]


def test_openapi_documents_every_route_with_examples(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    paths = set(schema["paths"])
    assert {"/predict", "/predict/batch", "/train", "/jobs/{job_id}", "/datasets", "/models", "/ready"} <= paths
    assert client.get("/docs").status_code == 200


def test_model_shows_how_its_default_version_is_batched(client: TestClient) -> None:

    before = client.get("/models/tiny").json()["serving"]
    assert before["version"] == 1 and before["engine"] in ("onnx", "xla", "tensorflow")
    rows = sample_rows()
    assert client.post("/predict/batch", json={"model": "tiny", "windows": [rows, rows, rows]}).status_code == 200
    after = client.get("/models/tiny").json()["serving"]
    assert after["batches"] == before["batches"] + 1
    assert after["windows"] == before["windows"] + 3
    assert after["mean_batch_size"] == round(after["windows"] / after["batches"], 2)
    assert after["max_batch_size"] == 8


def test_ready_models_and_metrics_name_the_engine_of_each_served_version(
    real_client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The tiny versions were exported at training time, so the real inference process serves them on ONNX Runtime.
    from app.core import metrics
    from app.main import service_state

    state = real_client.app.state  # type: ignore[attr-defined]
    monkeypatch.setattr(
        metrics.STATE, "source", lambda: service_state(state.registry, state.jobs, state.ledger, state.monitor)
    )
    assert real_client.get("/ready").json()["engines"] == {"tiny": "onnx", "tiny-h5": "onnx"}
    assert real_client.get("/models/tiny").json()["serving"]["engine"] == "onnx"
    text = real_client.get("/metrics").text
    assert 'stockcast_model_served_engine{engine="onnx",model="tiny"} 1.0' in text
