"""Fixtures for the service tests: apps over the session's tiny real models, with the fake or the real inference.

`client` serves the store through `tests.fakes.FakeInference` (the real
numpy steps around a numpy network, no TensorFlow) and lives for the whole
session: tests that change what it serves (an alias) put it back.
Jobs it queues run the stub training child (`tests/stub_training.py`).
`real_client` runs the real inference process, for the tests whose point is
the real network's numbers.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.fakes import fake_app
from tests.helpers import local_client, make_settings
from tests.stub_training import use_stub_training
from training.store import ModelStore


@pytest.fixture(scope="session")
def client(model_store: ModelStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """An in-process client over the real app (lifespan included), fake inference and stub training, for the session."""
    with local_client(fake_app(model_store.root, tmp_path_factory.mktemp("var"))) as test_client:
        use_stub_training(test_client)
        yield test_client


@pytest.fixture(scope="session")
def real_client(model_store: ModelStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """A client over the real app with the real inference process (TensorFlow), for numeric parity."""
    from app.main import create_app

    settings = make_settings(model_store.root, tmp_path_factory.mktemp("var"))
    with local_client(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def empty_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """A client over an empty model store (fake inference), for tests that upload and train their own."""
    with local_client(fake_app(tmp_path_factory.mktemp("models"), tmp_path_factory.mktemp("var"))) as test_client:
        yield test_client
