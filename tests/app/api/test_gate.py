"""The promotion gate over HTTP: a deliberately bad model is kept but not promoted,
its job says why (statistics and p-values), and a rollback by alias works."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.fakes import fake_app
from tests.helpers import DEADLINE_SECONDS, SAMPLE, WINDOW_ROWS, local_client, wait_job
from training.store import ALIASES_FILE, ModelStore

pytestmark = pytest.mark.tf


@pytest.fixture(scope="module")
def gate_client(model_store: ModelStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """A private copy of the store (this module adds versions) with `tiny` v1 as champion; fake inference."""
    root: Path = tmp_path_factory.mktemp("gate") / "models"
    shutil.copytree(model_store.root, root)
    # Only the champion: other modules may have pointed aliases of the shared store elsewhere already.
    (root / "tiny" / ALIASES_FILE).write_text(json.dumps({"champion": 1}))
    with local_client(fake_app(root, tmp_path_factory.mktemp("var"))) as client:
        yield client


def test_gate_refuses_a_shuffled_label_horizon_5_model_with_no_champion_and_the_job_says_why(
    gate_client: TestClient,
) -> None:
    # The sample's last 700 rows: a job small enough for the test, with the sample's last date.
    lines = SAMPLE.read_text().splitlines()
    recent = "\n".join([lines[0], *lines[-700:]]) + "\n"
    uploaded = gate_client.post(
        "/datasets", files={"file": ("recent.csv", recent, "text/csv")}, data={"name": "recent"}
    )
    assert uploaded.status_code == 201, uploaded.text
    accepted = gate_client.post(
        "/train",
        json={
            "model": "shuffled",
            "dataset": "recent",
            "window": 10,
            "units": 4,
            "epochs": 1,
            "horizon": 5,
            "shuffle_labels": True,
        },
    )
    assert accepted.status_code == 202, accepted.text
    # Training, backtest and the production refit: a liveness deadline, not a timing assertion.
    job = wait_job(gate_client, accepted.json()["job_id"], ("succeeded", "failed"), timeout=DEADLINE_SECONDS)
    assert job["status"] == "succeeded", job
    assert job["result"]["version"] == 1
    assert job["result"]["promoted"] is False
    gate = job["result"]["gate"]
    assert gate["champion_version"] is None
    assert gate["reason"].startswith(("no evidence of skill at step 1: DM ", "no evidence of skill pooled over steps"))
    assert "against naive (needs p < 0.025, the level of attempt 1)" in gate["reason"]
    evidence = gate["evidence"]
    assert evidence["horizon"] == 5 and len(evidence["dataset_sha256"]) == 64
    assert (evidence["attempt"], evidence["significance_level"], evidence["nominal_level"]) == (1, 0.025, 0.05)
    assert evidence["period"]["start"] < evidence["period"]["end"]
    for test in ("vs_naive_step_1", "vs_naive_pooled"):
        assert 0 <= evidence[test]["p_value"] <= 1 and evidence[test]["windows"] > 80

    model = gate_client.get("/models/shuffled").json()
    assert model["champion"] is None and model["default_version"] == 1  # kept, not promoted
    answer = gate_client.post("/predict", json={"model": "shuffled", "window": WINDOW_ROWS}).json()
    assert answer["skill"]["beats_naive"] is False and answer["skill"]["served_as"] == "unpromoted"
    assert answer["skill"]["trained_through"] == "2017-11-10"  # the dataset's last date


def test_rollout_then_rollback_by_alias_over_http(gate_client: TestClient) -> None:
    forward = gate_client.put("/models/tiny/aliases/champion", json={"version": 2, "reason": "manual rollout"})
    assert forward.status_code == 200
    assert gate_client.post("/predict", json={"model": "tiny", "window": WINDOW_ROWS}).json()["version"] == 2
    back = gate_client.put("/models/tiny/aliases/champion", json={"version": 1, "reason": "rollback"})
    assert back.status_code == 200 and back.json()["change"] == {**back.json()["change"], "from": 2, "to": 1}
    assert gate_client.post("/predict", json={"model": "tiny", "window": WINDOW_ROWS}).json()["version"] == 1
    staging = gate_client.put("/models/tiny/aliases/staging", json={"version": 2})
    assert staging.status_code == 200
    by_alias = gate_client.post("/predict", json={"model": "tiny", "alias": "staging", "window": WINDOW_ROWS})
    assert by_alias.json()["version"] == 2
    log = gate_client.get("/models/tiny/aliases").json()["log"]
    assert [(entry["alias"], entry["from"], entry["to"]) for entry in log[-3:]] == [
        ("champion", 1, 2),
        ("champion", 2, 1),
        ("staging", None, 2),
    ]
