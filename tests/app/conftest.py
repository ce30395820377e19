"""Fixtures for the service tests: a real store with tiny real Keras models."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.helpers import SAMPLE, make_settings, tiny_clean, tiny_config
from training.fitting import TrainingRun, train_version
from training.store import CHAMPION, ModelStore


@pytest.fixture(scope="session")
def model_store(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    """Store with `tiny` v1 (champion) and v2, and `tiny-h5` (horizon 5)."""
    store = ModelStore(tmp_path_factory.mktemp("models"))
    clean = tiny_clean()
    source = {"name": SAMPLE.name, "path": str(SAMPLE)}
    train_version(TrainingRun("tiny", clean, source, tiny_config()), store)
    store.set_alias("tiny", CHAMPION, 1, reason="test fixture")
    train_version(TrainingRun("tiny", clean, source, tiny_config(seed=7)), store)
    train_version(TrainingRun("tiny-h5", clean, source, tiny_config(horizon=5)), store)
    return store


@pytest.fixture(scope="module")
def client(model_store: ModelStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """An in-process client over the real app (lifespan included), shared by a test module."""
    from app.main import create_app

    settings = make_settings(model_store.root, tmp_path_factory.mktemp("var"))
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def empty_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """A client over an empty model store, for tests that train their own models."""
    from app.main import create_app

    settings = make_settings(tmp_path_factory.mktemp("models"), tmp_path_factory.mktemp("var"))
    with TestClient(create_app(settings)) as test_client:
        yield test_client
