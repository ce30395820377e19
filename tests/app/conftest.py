"""Fixtures for the service tests: a real store with tiny real Keras models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from training.data import CleanResult, load_prices
from training.pipeline import TrainConfig, train_version
from training.store import CHAMPION, ModelStore

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample" / "msft.csv"
WINDOW = 10


def tiny_clean(rows: int = 700) -> CleanResult:
    """The last `rows` days of the sample: enough for a split, quick to train on."""
    clean = load_prices(SAMPLE)
    clean.frame = clean.frame.iloc[-rows:].reset_index(drop=True)
    return clean


def tiny_config(**overrides: object) -> TrainConfig:
    """A model small enough to train in a second or two."""
    values: dict[str, object] = {"window": WINDOW, "units": 4, "epochs": 1, "batch_size": 64, "patience": 0}
    values.update(overrides)
    return TrainConfig(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def model_store(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    """Store with `tiny` v1 (champion) and v2, and `tiny-h5` (horizon 5)."""
    store = ModelStore(tmp_path_factory.mktemp("models"))
    clean = tiny_clean()
    source = {"name": SAMPLE.name, "path": str(SAMPLE)}
    train_version(clean, tiny_config(), store, "tiny", source)
    store.set_alias("tiny", CHAMPION, 1, reason="test fixture")
    train_version(clean, tiny_config(seed=7), store, "tiny", source)
    train_version(clean, tiny_config(horizon=5), store, "tiny-h5", source)
    return store


def make_settings(store_root: Path, data_dir: Path, **overrides: object) -> Settings:
    """Settings for a test app: no bootstrap, fast polling."""
    values: dict[str, object] = {
        "models_dir": store_root,
        "data_dir": data_dir,
        "sample_data": SAMPLE,
        "bootstrap": False,
        "job_poll_seconds": 0.2,
        "refresh_seconds": 0.5,
        "max_batch_wait_us": 500,
        # Fewer compiled batch shapes: each one costs an XLA compilation at load.
        "max_batch_size": 8,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


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
