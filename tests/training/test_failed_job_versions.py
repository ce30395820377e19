"""A version exists only if the job that stored it succeeded: a failure after the rename removes it.

The faults are injected at the exact write that fails when a disk fills up
(ENOSPC from the write after the version folder was renamed into place, from
the alias move of the promotion), on real files in a temporary store.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import tiny_clean
from training import promotion as workflow
from training import store as store_module
from training.config import TrainConfig
from training.errors import BrokenVersionError
from training.fitting import TrainingRun
from training.store import ALIAS_LOG_FILE, ALIASES_FILE, CHAMPION, COUNTER_FILE, MODEL_FILE, ModelStore


def disk_full(*_: Any) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def fill_disk_at(monkeypatch: pytest.MonkeyPatch, file_name: str) -> None:
    """The store's atomic JSON writes of `file_name` fail with ENOSPC from now on; the others go through."""
    real_write = store_module.write_json_atomic

    def write(path: Path, value: Any) -> None:
        if path.name == file_name:
            disk_full()
        real_write(path, value)

    monkeypatch.setattr(store_module, "write_json_atomic", write)


def write_fake_model(folder: Path) -> None:
    (folder / MODEL_FILE).write_bytes(b"weights")


def visible_entries(store: ModelStore, name: str) -> list[str]:
    return sorted(path.name for path in store.folder(name).iterdir() if not path.name.startswith("."))


def test_a_disk_that_fills_after_the_rename_leaves_no_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Finding 7: the version folder stayed (and became the default) although the job failed.
    store = ModelStore(tmp_path)
    fill_disk_at(monkeypatch, COUNTER_FILE)
    with pytest.raises(OSError, match="No space left on device"):
        store.save_version("demo", write_fake_model, {})
    assert store.versions("demo") == []
    assert store.default_version("demo") is None
    assert visible_entries(store, "demo") == []
    assert not list(store.folder("demo").glob(".tmp-*"))


def test_a_failed_alias_move_leaves_aliases_and_log_as_they_were(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ModelStore(tmp_path)
    first = store.save_version("demo", write_fake_model, {})
    second = store.save_version("demo", write_fake_model, {})
    store.set_alias("demo", CHAMPION, first, reason="first")
    log_before = (store.folder("demo") / ALIAS_LOG_FILE).read_bytes()
    fill_disk_at(monkeypatch, ALIASES_FILE)
    with pytest.raises(OSError, match="No space left on device"):
        store.set_alias("demo", CHAMPION, second, reason="second")
    assert store.aliases("demo") == {CHAMPION: first}
    assert (store.folder("demo") / ALIAS_LOG_FILE).read_bytes() == log_before
    assert [entry["to"] for entry in store.alias_log("demo")] == [first]


def test_a_job_that_fails_after_storing_its_version_takes_it_away(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ModelStore(tmp_path)
    stored: list[int] = []

    def train_version(run: Any, store: ModelStore, *_: Any, **__: Any) -> Any:
        version = store.save_version(run.name, write_fake_model, {})
        stored.append(version)
        return type("Outcome", (), {"version": version, "metadata": {}})()

    def gate_fails(*_: Any) -> Any:
        raise ValueError("the champion's windows differ in length")

    monkeypatch.setattr(workflow, "train_version", train_version)
    monkeypatch.setattr(workflow, "_write_report", lambda *_: None)
    monkeypatch.setattr(workflow, "decide", gate_fails)
    run = TrainingRun("demo", tiny_clean(30), {}, TrainConfig(backtest_folds=0))
    with pytest.raises(ValueError, match="windows differ"):
        workflow.train_and_promote(run, store)
    assert stored == [1]
    assert store.versions("demo") == [] and visible_entries(store, "demo") == []


def test_a_version_an_alias_points_at_is_never_discarded(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    version = store.save_version("demo", write_fake_model, {})
    store.set_alias("demo", "staging", version)
    with pytest.raises(BrokenVersionError, match=r"version 1 of 'demo' is kept: aliases \['staging'\] point at it"):
        store.discard_version("demo", version)
    assert store.versions("demo") == [1]
    assert json.loads((store.folder("demo") / ALIASES_FILE).read_text()) == {"staging": 1}
