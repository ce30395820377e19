"""Settings: the timeouts are settings, and their defaults are written once."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.core.config import Settings, default
from app.inference.client import InferenceProcess, InferenceTimeouts
from app.inference.engine import DEFAULT_MAX_BATCH_SIZE
from app.serving.registry import ModelRegistry
from tests.helpers import make_settings
from training.store import ModelStore


def test_timeouts_reach_the_inference_process(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path / "models",
        tmp_path / "var",
        inference_timeout_seconds=7.0,
        inference_load_timeout_seconds=70.0,
        inference_restart_delay_seconds=0.25,
        inference_stop_timeout_seconds=3.0,
    )
    inference = ModelRegistry(ModelStore(settings.models_dir), settings).inference
    assert inference.timeouts == InferenceTimeouts(
        call_seconds=7.0, load_seconds=70.0, restart_delay_seconds=0.25, stop_seconds=3.0
    )
    assert inference.load_timeout_seconds == 70.0


def test_library_defaults_are_the_settings_defaults(tmp_path: Path) -> None:
    inference = InferenceProcess(tmp_path)
    settings = Settings()
    assert inference.load_timeout_seconds == settings.inference_load_timeout_seconds == 600.0
    assert inference.timeouts.stop_seconds == settings.inference_stop_timeout_seconds
    assert DEFAULT_MAX_BATCH_SIZE == settings.max_batch_size == default("max_batch_size")


def test_timeouts_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOCKCAST_GRACEFUL_SHUTDOWN_SECONDS", "4")
    monkeypatch.setenv("STOCKCAST_INFERENCE_LOAD_TIMEOUT_SECONDS", "120")
    settings = Settings()
    assert (settings.graceful_shutdown_seconds, settings.inference_load_timeout_seconds) == (4.0, 120.0)
