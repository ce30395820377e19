"""Fixtures for the client's tests: the real service (uvicorn, the real inference process) on a copy of the
session's tiny models, with API keys, and the sample's prices as a desk holds them (a DataFrame).

The service answers batches of at most three windows (STOCKCAST_MAX_BATCH_WINDOWS=3), so that
`forecast_many` has to find the limit and keep under it.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pandas as pd
import pytest

from app.core.keys import create_key
from tests.helpers import SAMPLE, ServiceProcess
from training.store import ALIASES_FILE, ModelStore

BATCH_LIMIT = 3


@dataclass(frozen=True)
class KeyedService:
    """A running service and its two API keys."""

    process: ServiceProcess
    admin_key: str
    predict_key: str

    @property
    def url(self) -> str:
        """The service's base URL."""
        return self.process.url


def start_keyed_service(model_store: ModelStore, tmp_path_factory: pytest.TempPathFactory) -> KeyedService:
    """The service on a private copy of the tiny models (tests train and move aliases), with an admin and a
    predict key."""
    home = tmp_path_factory.mktemp("client-service")
    shutil.copytree(model_store.root, home / "models")
    # Only the champion, as trained: other modules may have pointed aliases of the shared store elsewhere already.
    (home / "models" / "tiny" / ALIASES_FILE).write_text(json.dumps({"champion": 1}))
    keys = home / "api_keys.json"
    admin, predict = create_key(keys, "ops", "admin"), create_key(keys, "desk", "predict")
    # As deployed (`python -m app`): its access log carries each request's id.
    process = ServiceProcess(
        home / "models",
        home,
        command=[sys.executable, "-m", "app"],
        STOCKCAST_API_KEYS_FILE=str(keys),
        STOCKCAST_MAX_BATCH_WINDOWS=str(BATCH_LIMIT),
        STOCKCAST_LEDGER_FLUSH_SECONDS="0.2",
        STOCKCAST_JOB_POLL_SECONDS="0.2",
        STOCKCAST_REFRESH_SECONDS="1",
    )
    process.start()
    return KeyedService(process, admin, predict)


@pytest.fixture(scope="module")
def service(model_store: ModelStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyedService]:
    """The real service for one test module."""
    running = start_keyed_service(model_store, tmp_path_factory)
    yield running
    running.process.stop()


@pytest.fixture(scope="session")
def prices() -> pd.DataFrame:
    """The bundled sample as a desk reads its own export: Yahoo's column names, a Date column, oldest first."""
    return pd.read_csv(SAMPLE, parse_dates=["Date"])
