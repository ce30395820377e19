"""The promotion gate over HTTP: a deliberately bad model is kept but not promoted,
the champion keeps serving, the job says why, and a rollback by alias works."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.helpers import WINDOW_ROWS, make_settings, wait_job
from training.store import ModelStore


@pytest.fixture(scope="module")
def gate_client(model_store: ModelStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """A private copy of the store (this module adds versions) with `tiny` v1 as champion."""
    from app.main import create_app

    root: Path = tmp_path_factory.mktemp("gate") / "models"
    shutil.copytree(model_store.root, root)
    with TestClient(create_app(make_settings(root, tmp_path_factory.mktemp("var")))) as client:
        yield client


def test_gate_refuses_a_shuffled_label_model_and_the_champion_stays(gate_client: TestClient) -> None:
    assert gate_client.get("/models/tiny").json()["champion"] == 1
    accepted = gate_client.post(
        "/train",
        json={"model": "tiny", "dataset": "msft", "window": 10, "units": 4, "epochs": 1, "shuffle_labels": True},
    )
    assert accepted.status_code == 202, accepted.text
    job = wait_job(gate_client, accepted.json()["job_id"], ("succeeded", "failed"))
    assert job["status"] == "succeeded", job
    assert job["result"]["version"] == 3
    assert job["result"]["promoted"] is False
    reason = job["result"]["gate"]["reason"]
    assert "MASE" in reason and ("above the gate" in reason or "worse than champion v1" in reason), reason

    model = gate_client.get("/models/tiny").json()
    assert model["champion"] == 1 and model["default_version"] == 1
    assert [version["version"] for version in model["versions"]] == [1, 2, 3]  # kept, not promoted
    assert gate_client.post("/predict", json={"model": "tiny", "window": WINDOW_ROWS}).json()["version"] == 1
    pinned = gate_client.post("/predict", json={"model": "tiny", "version": 3, "window": WINDOW_ROWS})
    assert pinned.status_code == 200 and pinned.json()["version"] == 3


def test_rollout_then_rollback_by_alias_over_http(gate_client: TestClient) -> None:
    forward = gate_client.put("/models/tiny/aliases/champion", json={"version": 2, "reason": "manual rollout"})
    assert forward.status_code == 200
    assert gate_client.post("/predict", json={"model": "tiny", "window": WINDOW_ROWS}).json()["version"] == 2
    back = gate_client.put("/models/tiny/aliases/champion", json={"version": 1, "reason": "rollback"})
    assert back.status_code == 200 and back.json()["change"] == {**back.json()["change"], "from": 2, "to": 1}
    assert gate_client.post("/predict", json={"model": "tiny", "window": WINDOW_ROWS}).json()["version"] == 1
    staging = gate_client.put("/models/tiny/aliases/staging", json={"version": 3})
    assert staging.status_code == 200
    by_alias = gate_client.post("/predict", json={"model": "tiny", "alias": "staging", "window": WINDOW_ROWS})
    assert by_alias.json()["version"] == 3
    log = gate_client.get("/models/tiny/aliases").json()["log"]
    assert [(entry["alias"], entry["from"], entry["to"]) for entry in log[-3:]] == [
        ("champion", 1, 2),
        ("champion", 2, 1),
        ("staging", None, 3),
    ]
