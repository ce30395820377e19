"""The store's contract on both backends: the folder, and S3 (a real moto server on loopback).

Each `Machine` is one process's view of the store: with S3, its own cache
folder (no shared disk); with the folder backend, the one shared folder.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.s3 import S3Server
from training.errors import BrokenVersionError, NotFoundError
from training.object_store import ObjectStore, StoreUnreachableError
from training.remote_store import RemoteModelStore, open_model_store
from training.store import (
    CHALLENGER,
    CHAMPION,
    METADATA_FILE,
    MODEL_FILE,
    REQUIRED_METADATA,
    ModelStore,
    StoreNotWritableError,
)

Machine = Callable[[str], ModelStore]


@pytest.fixture(params=["folder", "s3"])
def machine(request: pytest.FixtureRequest, tmp_path: Path) -> Machine:
    """A factory of stores on one backend: `machine("a")` and `machine("b")` are two machines' views."""
    if request.param == "folder":
        return lambda _label: ModelStore(tmp_path / "shared")
    url = request.getfixturevalue("s3_url")
    return lambda label: open_model_store(tmp_path / f"cache-{label}", url)


def described(**extra: Any) -> dict[str, Any]:
    """Metadata with every key a version must have (placeholders: the store does not read them) and `extra`."""
    return {**{key: {} for key in REQUIRED_METADATA}, **extra}


def fake_model(content: bytes = b"weights") -> Callable[[Path], None]:
    def write(folder: Path) -> None:
        (folder / MODEL_FILE).write_bytes(content)
        (folder / "extra.bin").write_bytes(b"any other file of the version")

    return write


def test_a_version_written_on_one_machine_is_read_whole_on_another(machine: Machine) -> None:
    writer, reader = machine("a"), machine("b")
    version = writer.save_version("demo", fake_model(), described(note="kept"))
    assert version == 1
    assert reader.model_names() == ["demo"] and reader.versions("demo") == [1]
    metadata = reader.read_metadata("demo", 1)
    assert metadata["note"] == "kept"
    assert metadata["files"] == {
        MODEL_FILE: hashlib.sha256(b"weights").hexdigest(),
        "extra.bin": hashlib.sha256(b"any other file of the version").hexdigest(),
    }
    path = reader.verified_model_path("demo", 1, metadata)
    assert path.read_bytes() == b"weights"
    assert json.loads((reader.version_dir("demo", 1) / METADATA_FILE).read_text())["version"] == 1


def test_a_failed_writer_leaves_no_version_and_uses_no_number(machine: Machine) -> None:
    store = machine("a")

    def half_write(folder: Path) -> None:
        (folder / MODEL_FILE).write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        store.save_version("demo", half_write, described())
    assert store.versions("demo") == [] and store.model_names() == []
    assert store.save_version("demo", fake_model(), described()) == 1


def test_two_writers_racing_get_distinct_versions_and_none_is_lost(machine: Machine) -> None:
    stores = [machine("a"), machine("b")]
    saved: list[list[int]] = [[], []]
    start = threading.Barrier(2)

    def write(index: int) -> None:
        start.wait()
        for round_number in range(4):
            content = f"writer {index} round {round_number}".encode()
            saved[index].append(stores[index].save_version("demo", fake_model(content), described(writer=index)))

    threads = [threading.Thread(target=write, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    everything = saved[0] + saved[1]
    assert sorted(everything) == list(range(1, 9))
    reader = machine("c")
    assert reader.versions("demo") == list(range(1, 9))
    for version in everything:
        writer = 0 if version in saved[0] else 1
        assert reader.read_metadata("demo", version)["writer"] == writer


def test_aliases_moved_by_two_writers_at_once_lose_no_change(machine: Machine) -> None:
    stores = [machine("a"), machine("b")]
    for _ in range(3):
        stores[0].save_version("demo", fake_model(), described())
    aliases = [CHAMPION, CHALLENGER]
    start = threading.Barrier(2)

    def move(index: int) -> None:
        start.wait()
        for version in (1, 2, 3):
            stores[index].set_alias("demo", aliases[index], version, reason=f"writer {index}")

    threads = [threading.Thread(target=move, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    reader = machine("c")
    assert reader.aliases("demo") == {CHAMPION: 3, CHALLENGER: 3}
    log = reader.alias_log("demo")
    for alias in aliases:
        moves = [(entry["from"], entry["to"]) for entry in log if entry["alias"] == alias]
        assert moves == [(None, 1), (1, 2), (2, 3)]


def test_alias_removal_attempts_and_discarded_versions(machine: Machine) -> None:
    store, other = machine("a"), machine("b")
    for _ in range(2):
        store.save_version("demo", fake_model(), described())
    store.set_alias("demo", CHAMPION, 1, reason="first")
    assert other.remove_alias("demo", CHAMPION, reason="gone") is not None
    assert other.remove_alias("demo", CHAMPION, reason="again") is None
    assert store.aliases("demo") == {}
    store.record_attempt("demo", {"version": 2, "decision": "kept"})
    other.record_attempt("demo", {"version": 3, "decision": "promoted"})
    assert [entry["version"] for entry in store.attempts("demo")] == [2, 3]
    store.set_alias("demo", CHAMPION, 2, reason="back")
    with pytest.raises(BrokenVersionError, match="aliases \\['champion'\\] point at it"):
        other.discard_version("demo", 2)
    other.discard_version("demo", 1)
    assert store.versions("demo") == [2]
    with pytest.raises(NotFoundError, match="has no version 1"):
        machine("c").read_metadata("demo", 1)
    # A discarded number is never handed out again.
    assert store.save_version("demo", fake_model(), described()) == 3


# S3 only: what the folder backend gets from rename() and flock, the object store gets from conditional writes.


def test_a_writer_with_a_stale_view_of_the_numbers_climbs_past_taken_ones(s3_url: str, tmp_path: Path) -> None:
    class StaleView(RemoteModelStore):
        """Always believes no version exists yet, so every number it tries is taken until the free one."""

        def _numbers(self, name: str) -> tuple[list[int], int]:
            return [], 0

    fresh = open_model_store(tmp_path / "a", s3_url)
    assert [fresh.save_version("demo", fake_model(), described()) for _ in range(2)] == [1, 2]
    stale = StaleView(tmp_path / "b", ObjectStore(s3_url))
    assert stale.save_version("demo", fake_model(b"third"), described()) == 3
    assert fresh.versions("demo") == [1, 2, 3]
    assert fresh.verified_model_path("demo", 3, fresh.read_metadata("demo", 3)).read_bytes() == b"third"


def test_an_alias_move_that_loses_the_compare_and_swap_is_run_again(s3_url: str, tmp_path: Path) -> None:
    first = RemoteModelStore(tmp_path / "a", ObjectStore(s3_url))
    second = RemoteModelStore(tmp_path / "b", ObjectStore(s3_url))
    for _ in range(2):
        first.save_version("demo", fake_model(), described())
    seen: list[dict[str, int]] = []

    def move(current: dict[str, int]) -> dict[str, Any]:
        seen.append(dict(current))
        if len(seen) == 1:
            # Another machine moves an alias between this writer's read and its write.
            second.set_alias("demo", CHALLENGER, 2, reason="meanwhile")
        current[CHAMPION] = 1
        return {"alias": CHAMPION, "from": None, "to": 1, "reason": "mine"}

    # Without the lock on purpose: the compare-and-swap alone must keep the other change.
    first._change_aliases("demo", move)
    assert seen == [{}, {CHALLENGER: 2}]
    assert first.aliases("demo") == {CHAMPION: 1, CHALLENGER: 2}
    assert [entry["reason"] for entry in first.alias_log("demo")] == ["meanwhile", "mine"]


def test_a_job_s_upload_in_progress_holds_up_no_alias_move(
    s3_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A job's version is committed under the model's lock; its files are uploaded before it,
    # so a slow (or dying) uploader does not stall the gate or an alias move elsewhere.
    writer, other = open_model_store(tmp_path / "cache-a", s3_url), open_model_store(tmp_path / "cache-b", s3_url)
    other.save_version("demo", fake_model(), described())
    uploading, release = threading.Event(), threading.Event()
    upload_file = writer.objects.upload_file

    def slow_upload(path: Path, key: str) -> None:
        uploading.set()
        release.wait(timeout=30)
        upload_file(path, key)

    monkeypatch.setattr(writer.objects, "upload_file", slow_upload)
    job = threading.Thread(
        target=writer.save_version, args=("demo", fake_model(b"job"), described(data={"job_id": "job-1"}))
    )
    job.start()
    try:
        assert uploading.wait(timeout=10)
        moved = threading.Thread(target=other.set_alias, args=("demo", CHAMPION, 1))
        moved.start()
        moved.join(timeout=10)
        assert not moved.is_alive(), "the alias move waited for another machine's upload"
        assert other.aliases("demo") == {CHAMPION: 1}
    finally:
        release.set()
        job.join(timeout=30)
    assert other.versions("demo") == [1, 2] and other.version_of_job("demo", "job-1") == 2


def test_an_upload_killed_before_its_manifest_is_invisible_and_swept(s3_url: str, tmp_path: Path) -> None:
    store = open_model_store(tmp_path / "a", s3_url)
    assert isinstance(store, RemoteModelStore)
    store.save_version("demo", fake_model(), described())
    # What a writer killed mid-upload leaves: files under an upload id that no manifest names.
    store.objects.put("models/demo/uploads/deadbeef/model.keras", b"half a model")
    assert store.versions("demo") == [1]
    assert store.sweep_uploads() == []  # young: its writer may still be uploading
    assert store.sweep_uploads(older_than_seconds=0) == ["models/demo/uploads/deadbeef/model.keras"]
    assert store.verified_model_path("demo", 1, store.read_metadata("demo", 1)).is_file()


def test_a_file_changed_in_the_bucket_is_refused_before_it_loads(s3_url: str, tmp_path: Path) -> None:
    writer = open_model_store(tmp_path / "a", s3_url)
    writer.save_version("demo", fake_model(), described())
    assert isinstance(writer, RemoteModelStore)
    upload = json.loads(writer.objects.get("models/demo/versions/1/manifest.json").body)["upload"]  # type: ignore[union-attr]
    writer.objects.put(f"models/demo/uploads/{upload}/{MODEL_FILE}", b"tampered")
    reader = open_model_store(tmp_path / "b", s3_url)
    with pytest.raises(BrokenVersionError, match=f"{MODEL_FILE} does not match its manifest"):
        reader.version_dir("demo", 1)
    assert reader.versions("demo") == [1]
    assert not (tmp_path / "b" / "demo" / "1").exists()


def test_the_cache_is_bounded_and_survives_a_restart(s3_url: str, tmp_path: Path) -> None:
    writer = open_model_store(tmp_path / "a", s3_url)
    for _ in range(4):
        writer.save_version("demo", fake_model(), described())
    reader = RemoteModelStore(tmp_path / "b", ObjectStore(s3_url), cache_versions=2)
    for version in (1, 2, 3):
        reader.version_dir("demo", version)
    assert sorted(path.name for path in (tmp_path / "b" / "demo").iterdir() if path.name.isdigit()) == ["2", "3"]
    restarted = RemoteModelStore(tmp_path / "b", ObjectStore(s3_url), cache_versions=2)
    restarted.objects = ObjectStore("s3://no-such-bucket-anywhere/x")  # a cached version needs no store
    assert restarted.version_dir("demo", 3).joinpath(MODEL_FILE).is_file()


def test_an_unreachable_store_answers_503_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # the discard port: nothing listens
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    store = open_model_store(tmp_path, "s3://stockcast/x")
    with pytest.raises(StoreUnreachableError, match="is unreachable") as unreachable:
        store.versions("demo")
    assert unreachable.value.status_code == 503
    with pytest.raises(StoreNotWritableError, match="cannot be written") as refused:
        store.check_writable("demo")
    assert refused.value.status_code == 503
    # What /ready says: the latest request's verdict, without waiting for another connect timeout.
    assert "is unreachable" in str(store.problem())


def test_the_store_answers_again_without_a_new_client(s3_server: S3Server, s3_url: str, tmp_path: Path) -> None:
    store = open_model_store(tmp_path, s3_url)
    store.save_version("demo", fake_model(), described())
    s3_server.stop()
    try:
        with pytest.raises(StoreUnreachableError):
            store.aliases("demo")
        assert "is unreachable" in str(store.problem())
    finally:
        s3_server.start()
    assert store.versions("demo") == [1] and store.problem() is None
