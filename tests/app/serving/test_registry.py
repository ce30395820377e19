"""A version that fails to load is never served: the one before keeps serving.
Also: the OpenAPI examples, which must really work (the version report chart: tests/app/api/test_reports.py)."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.fakes import fake_app
from tests.helpers import WINDOW_ROWS, local_client, tiny_clean, tiny_config
from tests.stub_training import use_stub_training
from training.fitting import TrainingRun, train_version
from training.store import ALIASES_FILE, METADATA_FILE, MODEL_FILE, ModelStore


def add_broken_copy(root: Path, name: str, source_version: int, version: int) -> None:
    """A complete-looking version whose model file no longer matches its hash."""
    shutil.copytree(root / name / str(source_version), root / name / str(version))
    metadata_path = root / name / str(version) / METADATA_FILE
    metadata = json.loads(metadata_path.read_text())
    metadata["version"] = version
    metadata_path.write_text(json.dumps(metadata))
    with open(root / name / str(version) / MODEL_FILE, "ab") as handle:
        handle.write(b"corrupted")


@pytest.fixture
def broken_store(model_store: ModelStore, tmp_path: Path) -> Path:
    root = tmp_path / "models"
    shutil.copytree(model_store.root, root)
    add_broken_copy(root, "tiny", 2, 3)
    return root


def test_alias_to_a_broken_version_is_refused_and_the_old_one_keeps_serving(broken_store: Path, tmp_path: Path) -> None:
    with local_client(fake_app(broken_store, tmp_path / "var")) as client:
        assert client.post("/predict", json={"model": "tiny", "window": WINDOW_ROWS}).json()["version"] == 1
        moved = client.put("/models/tiny/aliases/champion", json={"version": 3, "reason": "bad idea"})
        assert moved.status_code == 409, moved.text
        assert "not moved to v3" in moved.json()["detail"] and "sha256" in moved.json()["detail"]
        assert client.get("/models/tiny").json()["champion"] == 1
        assert client.post("/predict", json={"model": "tiny", "window": WINDOW_ROWS}).json()["version"] == 1
        log = client.get("/models/tiny/aliases").json()["log"]
        assert [(entry["from"], entry["to"]) for entry in log[-2:]] == [(1, 3), (3, 1)]
        pinned = client.post("/predict", json={"model": "tiny", "version": 3, "window": WINDOW_ROWS})
        assert pinned.status_code == 409 and "does not match its sha256" in pinned.json()["detail"]


def test_a_broken_champion_at_start_falls_back_and_says_so(broken_store: Path, tmp_path: Path) -> None:
    (broken_store / "tiny" / ALIASES_FILE).write_text(json.dumps({"champion": 3}))
    with local_client(fake_app(broken_store, tmp_path / "var")) as client:
        ready = client.get("/ready")
        assert ready.status_code == 200  # something serves every model...
        assert ready.json()["models"]["tiny"] == 2  # ...the newest version that loads
        assert "v3 not served" in ready.json()["problems"]["tiny"]
        assert client.get("/models/tiny").json()["serving_error"].startswith("v3 not served")


@pytest.mark.tf
def test_versions_trained_elsewhere_are_picked_up_without_restart(model_store: ModelStore, tmp_path: Path) -> None:
    """The CLI writes to the store directly; the registry's watcher serves the new model (fake inference)."""
    root = tmp_path / "models"
    shutil.copytree(model_store.root, root)
    with local_client(fake_app(root, tmp_path / "var")) as client:
        assert client.post("/predict", json={"model": "fresh", "window": WINDOW_ROWS}).status_code == 404
        run = TrainingRun("fresh", tiny_clean(), {"name": "x"}, tiny_config(backtest_folds=0))
        train_version(run, ModelStore(root))
        deadline = time.monotonic() + 60
        while client.post("/predict", json={"model": "fresh", "window": WINDOW_ROWS}).status_code != 200:
            assert time.monotonic() < deadline, "the new model was never served"
            time.sleep(0.2)


@pytest.fixture(scope="module")
def msft_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """A store holding a tiny `msft` model with the sample model's window of 40 (fake inference, stub training)."""
    root = tmp_path_factory.mktemp("examples") / "models"
    run = TrainingRun("msft", tiny_clean(), {"name": "x"}, tiny_config(window=40, backtest_folds=0))
    train_version(run, ModelStore(root))
    with local_client(fake_app(root, tmp_path_factory.mktemp("var"))) as client:
        use_stub_training(client)
        yield client


@pytest.mark.tf
def test_every_openapi_example_works(msft_client: TestClient) -> None:
    schema = msft_client.get("/openapi.json").json()
    tried = 0
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            content = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
            for name, example in content.get("examples", {}).items():
                url = path.replace("{name}", "msft").replace("{version}", "1")
                url = url.replace("{alias}", "champion").replace("{label}", "champion")
                response = msft_client.request(method.upper(), url, json=example["value"])
                assert response.status_code in (200, 202), f"{method} {path} example {name}: {response.text}"
                tried += 1
    assert tried >= 7
