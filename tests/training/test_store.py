"""The versioned store: atomic writes, increasing numbers, aliases, and refusing broken versions."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from training.artifact import load_version
from training.errors import BrokenVersionError, ConfigError, NotFoundError
from training.fitting import TrainOutcome
from training.store import ALIAS_LOCK_FILE, CHAMPION, METADATA_FILE, MODEL_FILE, ModelStore


class WriterCrashedError(RuntimeError):
    """Stands for anything that kills a writer half-way (disk full, a bug, Ctrl-C)."""


def write_fake_model(folder: Path) -> None:
    """A stand-in model file: the store itself does not look inside it."""
    (folder / MODEL_FILE).write_bytes(b"weights")


def test_a_writer_that_fails_mid_write_leaves_nothing_visible(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)

    def half_write(folder: Path) -> None:
        (folder / MODEL_FILE).write_bytes(b"half a model")
        raise WriterCrashedError("disk full")

    with pytest.raises(WriterCrashedError):
        store.save_version("demo", half_write, {})
    assert store.versions("demo") == []
    assert store.model_names() == []
    assert [path.name for path in (tmp_path / "demo").iterdir()] == []
    # The crash did not use up a number either.
    assert store.save_version("demo", write_fake_model, {}) == 1


def test_an_interrupt_mid_write_also_cleans_up(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)

    def interrupted(folder: Path) -> None:
        (folder / MODEL_FILE).write_bytes(b"x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.save_version("demo", interrupted, {})
    assert list((tmp_path / "demo").glob(".tmp-*")) == []
    assert store.versions("demo") == []


def test_a_writer_without_a_model_file_is_refused(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    with pytest.raises(BrokenVersionError, match=f"did not produce {MODEL_FILE}"):
        store.save_version("demo", lambda folder: (folder / "other.bin").write_bytes(b"x"), {})
    assert store.versions("demo") == []
    assert list((tmp_path / "demo").iterdir()) == []


def test_saved_metadata_carries_number_name_and_file_hash(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    version = store.save_version("demo", write_fake_model, {"note": "kept"})
    metadata = json.loads((tmp_path / "demo" / "1" / METADATA_FILE).read_text())
    assert version == 1
    assert metadata["version"] == 1 and metadata["name"] == "demo" and metadata["format_version"] == 1
    assert metadata["note"] == "kept"
    assert metadata["files"][MODEL_FILE] == hashlib.sha256(b"weights").hexdigest()


def test_version_numbers_only_increase(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    assert [store.save_version("demo", write_fake_model, {}) for _ in range(3)] == [1, 2, 3]
    shutil.rmtree(tmp_path / "demo" / "3")
    assert store.versions("demo") == [1, 2]
    # Number 3 was handed out once; a client holding "v3" must never see another model under it.
    assert store.save_version("demo", write_fake_model, {}) == 4
    shutil.rmtree(tmp_path / "demo" / "4")
    shutil.rmtree(tmp_path / "demo" / "2")
    assert store.save_version("demo", write_fake_model, {}) == 5
    assert store.versions("demo") == [1, 5]


def test_stale_temporary_folders_are_invisible_and_removable(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    store.save_version("demo", write_fake_model, {})
    stale = tmp_path / "demo" / ".tmp-deadbeef"
    stale.mkdir()
    (stale / MODEL_FILE).write_bytes(b"x")
    assert store.versions("demo") == [1]
    assert store.remove_stale_temporaries() == [stale]
    assert not stale.exists()


@pytest.mark.parametrize("name", ["", "../escape", "a/b", ".hidden", "x" * 65, "spaces here"])
def test_model_names_must_be_safe_folder_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="invalid model name"):
        ModelStore(tmp_path).save_version(name, write_fake_model, {})


@pytest.mark.parametrize("name", ["..", ".", "demo\n", "demo\x00", "a/../demo", "x" * 300])
def test_every_store_method_refuses_a_name_that_could_leave_the_store(tmp_path: Path, name: str) -> None:
    root = tmp_path / "models"
    store = ModelStore(root)
    store.save_version("demo", write_fake_model, {})
    (root / "not a model").mkdir()  # a folder whose name breaks the rule is not listed
    reads = [store.versions, store.aliases, store.alias_log, store.default_version, lambda n: store.version_dir(n, 1)]
    writes = [lambda n: store.set_alias(n, CHAMPION, 1), lambda n: store.save_version(n, write_fake_model, {})]
    for call in reads + writes:
        with pytest.raises(ConfigError, match=r"^invalid model name "):
            call(name)
    assert store.model_names() == ["demo"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["models"]


def test_aliases_resolve_and_every_change_is_logged(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    for _ in range(3):
        store.save_version("demo", write_fake_model, {})
    assert store.resolve("demo") == 3
    store.set_alias("demo", CHAMPION, 1, reason="first")
    store.set_alias("demo", CHAMPION, 2, reason="better")
    assert store.resolve("demo") == 2
    assert store.resolve("demo", version=3) == 3
    assert store.resolve("demo", alias=CHAMPION) == 2
    assert [(entry["from"], entry["to"], entry["reason"]) for entry in store.alias_log("demo")] == [
        (None, 1, "first"),
        (1, 2, "better"),
    ]
    with pytest.raises(NotFoundError, match="has no version 9"):
        store.set_alias("demo", CHAMPION, 9)
    with pytest.raises(ConfigError, match="invalid alias"):
        store.set_alias("demo", "Not Valid", 1)


def test_alias_lock_excludes_other_processes_and_is_reentrant(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    store.save_version("demo", write_fake_model, {})
    probe = (
        "import fcntl, sys\n"
        "with open(sys.argv[1], 'a+b') as handle:\n"
        "    try:\n"
        "        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
        "    except BlockingIOError:\n"
        "        sys.exit(3)\n"
    )
    lock_file = str(tmp_path / "demo" / ALIAS_LOCK_FILE)
    with store.alias_lock("demo"):
        # Another process (another worker on the shared store) must wait for it.
        assert subprocess.run([sys.executable, "-c", probe, lock_file]).returncode == 3
        # The gate holds the lock while it moves champion: re-entering must not deadlock.
        store.set_alias("demo", CHAMPION, 1, reason="under the lock")
    assert subprocess.run([sys.executable, "-c", probe, lock_file]).returncode == 0
    assert store.aliases("demo") == {CHAMPION: 1}


def test_unknown_models_and_versions_are_not_found(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    with pytest.raises(NotFoundError, match="unknown model 'ghost'"):
        store.resolve("ghost")
    store.save_version("demo", write_fake_model, {})
    with pytest.raises(NotFoundError, match=r"model 'demo' has no version 7; versions: \[1\]"):
        store.read_metadata("demo", 7)


# Refusing broken versions: each test damages a copy of a real trained version.


@pytest.fixture
def copied_version(trained_store: tuple[ModelStore, TrainOutcome], tmp_path: Path) -> tuple[ModelStore, Path]:
    """A private copy of the session's trained store, safe to damage."""
    store, outcome = trained_store
    shutil.copytree(store.root, tmp_path / "models")
    copy = ModelStore(tmp_path / "models")
    return copy, copy.version_dir("tiny", outcome.version)


def test_an_intact_copy_loads(copied_version: tuple[ModelStore, Path]) -> None:
    store, folder = copied_version
    assert load_version(store, "tiny", int(folder.name)).version == int(folder.name)


def test_a_version_without_its_model_file_is_refused(copied_version: tuple[ModelStore, Path]) -> None:
    store, folder = copied_version
    (folder / MODEL_FILE).unlink()
    with pytest.raises(BrokenVersionError, match=f"{MODEL_FILE} is missing"):
        load_version(store, "tiny", int(folder.name))


def test_a_tampered_model_file_is_refused(copied_version: tuple[ModelStore, Path]) -> None:
    store, folder = copied_version
    with open(folder / MODEL_FILE, "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(BrokenVersionError, match="does not match its sha256"):
        load_version(store, "tiny", int(folder.name))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda metadata: "{not json", "metadata.json is unreadable"),
        (lambda metadata: json.dumps([1, 2]), "not an object"),
        (lambda metadata: json.dumps({k: v for k, v in metadata.items() if k != "scaler"}), r"lacks \['scaler'\]"),
        (lambda metadata: json.dumps({**metadata, "format_version": 99}), "format_version 99 is not supported"),
        (lambda metadata: json.dumps({**metadata, "version": 42}), "metadata names tiny v42"),
        (
            lambda metadata: json.dumps({**metadata, "scaler": {**metadata["scaler"], "feature_scale": [0, 1]}}),
            "invalid preprocessing metadata",
        ),
        (lambda metadata: json.dumps({**metadata, "window": 11}), "do not match metadata"),
        (lambda metadata: json.dumps({**metadata, "features": ["close", "volume"]}), "scaler shapes"),
    ],
    ids=["not-json", "not-object", "no-scaler", "format", "wrong-number", "bad-scaler", "wrong-window", "features"],
)
def test_bad_metadata_is_refused(copied_version: tuple[ModelStore, Path], damage, message: str) -> None:
    store, folder = copied_version
    path = folder / METADATA_FILE
    path.write_text(damage(json.loads(path.read_text())))
    with pytest.raises(BrokenVersionError, match=message):
        load_version(store, "tiny", int(folder.name))
