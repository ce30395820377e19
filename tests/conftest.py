"""Shared fixtures: the bundled sample data, a slice of it, and the one store of tiny real models.

The tiny models (`model_store`) are trained for real with Keras once per
session; every test that needs a trained version reads them, through the
HTTP layer (`tests/app/conftest.py`) or directly (`trained_store`).

Markers (pyproject.toml): `tf` runs a real TensorFlow network or training
child, `e2e` starts real service processes, `postgres` needs the test
database. Everything runs by default (CI); the fast tier, about a minute:
    scripts/test -m "not tf and not e2e"
"""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

import pytest

from tests.helpers import ROOT, SAMPLE, tiny_clean, tiny_config
from tests.s3 import s3_server, s3_url, seaweed  # noqa: F401 (fixtures: a real S3 server on loopback)
from training.data import CleanResult
from training.fitting import TrainingRun, TrainOutcome, train_version
from training.store import CHAMPION, ModelStore

# TensorFlow is imported lazily by the tests that train, after this line; its
# C++ start-up notices are noise in test output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The last rows of the sample (2015-06 to 2017-11, about 42 to 84 USD) for the
# data and command-line tests: enough for a 70/15/15 split with window 10.
SMALL_ROWS = 600
# Fixtures whose users run real TensorFlow networks (marked `tf` for them).
TF_FIXTURES = {"real_client", "trained_store"}
# The files that take longest, heaviest first (wall seconds of each in a two-process run of the suite).
# They are collected first, so pytest-xdist (`--dist loadfile --no-loadscope-reorder`, scripts/test) hands
# them out first and the short files even out the end; xdist's own order (most tests first) left the
# heaviest files, which have few tests, for last. The scale-out test needs no tiny models, so the other
# process runs it while the first trains them.
HEAVIEST_FILES = (
    "tests/app/jobs/test_scaleout.py",
    "tests/app/jobs/test_scaleout_s3.py",
    "tests/app/inference/test_client.py",
    "tests/app/test_http_e2e.py",
    "tests/app/jobs/test_outage.py",
    "tests/app/api/test_gate.py",
    "tests/client/test_async_client.py",
    "tests/client/test_sync_client.py",
    "tests/app/test_ledger_e2e.py",
    "tests/training/test_backtest.py",
    "tests/app/test_store_outage.py",
    "tests/test_deploy.py",
    "tests/app/test_abuse.py",
    "tests/app/api/test_jobs.py",
    "tests/client/test_retries.py",
    "tests/app/schedules/test_workers.py",
    "tests/app/test_process_rule.py",
    "tests/app/inference/test_onnx_engine.py",
    "tests/training/test_onnx_export.py",
    "tests/training/test_version_report.py",
    "tests/training/test_cli.py",
    "tests/training/test_promotion.py",
    "tests/app/api/test_reports.py",
    "tests/app/api/test_tfserving.py",
    "tests/app/test_schedule_command.py",
    "tests/app/test_shadow_process.py",
    "tests/app/test_interop_clients.py",
    "tests/app/inference/test_engine.py",
    "tests/app/serving/test_registry.py",
)


def pytest_configure(config: pytest.Config) -> None:
    """Refuse to run with a HEAVIEST_FILES entry that names no file (a renamed file would lose its place)."""
    missing = [path for path in HEAVIEST_FILES if not (ROOT / path).is_file()]
    if missing:
        raise pytest.UsageError(f"tests/conftest.py: HEAVIEST_FILES names files that do not exist: {missing}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `tf` every test that uses a fixture serving or loading the real networks; heaviest files first."""
    for item in items:
        if TF_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.tf)
    rank = {path: place for place, path in enumerate(HEAVIEST_FILES)}
    # A stable sort: each file's tests, and the files not listed, keep their order.
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))


@pytest.fixture(scope="session")
def sample_csv() -> Path:
    """The bundled MSFT daily prices."""
    return SAMPLE


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
def small_clean() -> CleanResult:
    """The last SMALL_ROWS days of the sample, read and cleaned."""
    return tiny_clean(SMALL_ROWS)


def train_tiny_models(root: Path) -> None:
    """`tiny` v1 (champion) and v2, and `tiny-h5` (horizon 5), trained for real into `root`."""
    store = ModelStore(root)
    clean = tiny_clean()
    source = {"name": SAMPLE.name, "path": str(SAMPLE)}
    train_version(TrainingRun("tiny", clean, source, tiny_config()), store)
    store.set_alias("tiny", CHAMPION, 1, reason="test fixture")
    train_version(TrainingRun("tiny", clean, source, tiny_config(seed=7)), store)
    train_version(TrainingRun("tiny-h5", clean, source, tiny_config(horizon=5)), store)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelStore, TrainOutcome]:
    """The tiny models in a store of this session's own, trained once per run; and tiny v1's outcome.

    Under pytest-xdist the workers share one training: the first to get the
    lock trains into the run's common folder, and each worker copies the
    store from there (tests change their store, so no two share one).
    """
    root = tmp_path_factory.mktemp("models")
    shutil.rmtree(root)
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        train_tiny_models(root)
    else:
        shared = tmp_path_factory.getbasetemp().parent / "tiny-models"
        with open(tmp_path_factory.getbasetemp().parent / "tiny-models.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (shared / "done").is_file():
                shutil.rmtree(shared, ignore_errors=True)
                train_tiny_models(shared / "models")
                (shared / "done").touch()
        shutil.copytree(shared / "models", root)
    store = ModelStore(root)
    metadata = store.read_metadata("tiny", 1)
    first = TrainOutcome(
        version=1, metadata=metadata, epochs_run=metadata["epochs_run"], seconds=metadata["training_seconds"]
    )
    return store, first


@pytest.fixture(scope="session")
def model_store(tiny_models: tuple[ModelStore, TrainOutcome]) -> ModelStore:
    """The session's store of tiny real models (see `tiny_models`); tests that change it must put it back."""
    return tiny_models[0]


@pytest.fixture(scope="session")
def trained_store(tiny_models: tuple[ModelStore, TrainOutcome]) -> tuple[ModelStore, TrainOutcome]:
    """The session's store and the outcome of training `tiny` v1; treat as read-only."""
    return tiny_models
