"""Shared fixtures: the bundled sample data, a slice of it, and tiny real models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from training.config import TrainConfig
from training.data import CleanResult, load_prices
from training.fitting import TrainingRun, TrainOutcome, train_version
from training.store import ModelStore

# TensorFlow is imported lazily by the tests that train, after this line; its
# C++ start-up notices are noise in test output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPOSITORY = Path(__file__).resolve().parent.parent
SAMPLE_CSV = REPOSITORY / "data" / "sample" / "msft.csv"
# The last rows of the sample (2015-06 to 2017-11, about 42 to 84 USD): enough
# for a 70/15/15 split with window 10, small enough to train in seconds.
SMALL_ROWS = 600


@pytest.fixture(scope="session")
def sample_csv() -> Path:
    """The bundled MSFT daily prices."""
    return SAMPLE_CSV


@pytest.fixture(scope="session")
def small_csv_bytes(sample_csv: Path) -> bytes:
    """Header plus the last SMALL_ROWS lines of the sample, as CSV bytes."""
    lines = sample_csv.read_bytes().splitlines(keepends=True)
    return b"".join([lines[0], *lines[-SMALL_ROWS:]])


@pytest.fixture(scope="session")
def small_csv(small_csv_bytes: bytes, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The slice of the sample written to a file (for the command line)."""
    path = tmp_path_factory.mktemp("data") / "msft_small.csv"
    path.write_bytes(small_csv_bytes)
    return path


@pytest.fixture(scope="session")
def small_clean(small_csv_bytes: bytes) -> CleanResult:
    """The slice of the sample, read and cleaned."""
    return load_prices(small_csv_bytes)


@pytest.fixture(scope="session")
def tiny_config() -> TrainConfig:
    """A configuration that trains in a few seconds on two shared CPU cores."""
    return TrainConfig(window=10, units=4, epochs=2, batch_size=32, patience=1)


@pytest.fixture(scope="session")
def trained_store(
    small_clean: CleanResult, tiny_config: TrainConfig, tmp_path_factory: pytest.TempPathFactory
) -> tuple[ModelStore, TrainOutcome]:
    """A store holding one real (tiny) version trained on the slice; treat as read-only."""
    store = ModelStore(tmp_path_factory.mktemp("models"))
    source = {"name": "msft_small.csv", "path": "msft_small.csv", "sha256": "0" * 64}
    outcome = train_version(TrainingRun("tiny", small_clean, source, tiny_config), store)
    return store, outcome
