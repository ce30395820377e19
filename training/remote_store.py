"""The model store on S3-compatible object storage, with the local folder as a bounded cache.

Same public methods as the folder store (`training.store.ModelStore`), so
callers do not know which one they hold; the folder under `root` keeps the
folder store's layout and is what the inference process reads. In the
bucket, under the store URL's prefix (docs/store.md):

    models/<name>/uploads/<upload id>/<file>       a version's files, uploaded first
    models/<name>/versions/<n>/manifest.json       written create-only: version n exists once it does
    models/<name>/versions/<n>/discarded.json      a failed job's version, taken back (its number stays used)
    models/<name>/aliases.json                     alias -> version, changed by compare-and-swap on its ETag
    models/<name>/alias_log/<time>-<id>.json       one object per alias change
    models/<name>/attempts/<time>-<id>.json        one object per gate decision
    models/<name>/lock.json                        the alias lock's lease (create-only, expires)

A version without a manifest does not exist, so a writer killed mid-upload
leaves nothing visible; `sweep_uploads` deletes such uploads later.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from training.errors import BrokenVersionError, NotFoundError
from training.files import NAME_PATTERN, check_name, sha256_of
from training.object_store import ObjectStore, PreconditionFailedError, StoreUnreachableError
from training.store import (
    ALIAS_LOCK_FILE,
    FORMAT_VERSION,
    METADATA_FILE,
    ModelStore,
    StoreNotWritableError,
    _exclusive,
)

logger = logging.getLogger("stockcast.store")

MANIFEST = "manifest.json"
DISCARDED = "discarded.json"
MANIFEST_CACHE = ".manifests"
# Versions kept in the local cache across all models; the least recently used go first.
DEFAULT_CACHE_VERSIONS = 20
# An upload with no manifest that is older than this is a writer that died; younger ones may still be writing.
UPLOAD_GRACE_SECONDS = 3600.0
# How long the alias lock's lease lasts unless its holder renews it (a third of the way through): a holder that
# died blocks the others this long at most. Waiting for the lock outlasts one lease, so a dead holder is outwaited.
LEASE_SECONDS = 30.0
LOCK_WAIT_SECONDS = 2 * LEASE_SECONDS
# Compare-and-swap rounds before giving up: each lost round means another writer moved an alias meanwhile.
CAS_ROUNDS = 50


class StoreBusyError(StoreUnreachableError):
    """The store's lock or compare-and-swap stayed contended for too long; the caller may retry."""


def _ordered_key() -> str:
    """An object name that lists in write order (nanoseconds first), unique across writers."""
    return f"{time.time_ns():020d}-{uuid.uuid4().hex}.json"


class RemoteModelStore(ModelStore):
    """Model versions and aliases in an object store; `root` is this machine's cache of whole versions."""

    remote = True

    def __init__(self, root: str | Path, objects: ObjectStore, cache_versions: int = DEFAULT_CACHE_VERSIONS) -> None:
        super().__init__(root)
        self.objects = objects
        self.cache_versions = cache_versions
        self._lock_depth = threading.local()

    def _prefix(self, name: str) -> str:
        return f"models/{check_name(name)}/"

    # Reading -----------------------------------------------------------------

    def model_names(self) -> list[str]:
        """Names with at least one version in the object store."""
        return sorted(
            name for name in self.objects.children("models/") if NAME_PATTERN.fullmatch(name) and self.versions(name)
        )

    def _numbers(self, name: str) -> tuple[list[int], int]:
        """(visible versions oldest first, the highest number ever taken, discarded ones included)."""
        manifests: set[int] = set()
        discarded: set[int] = set()
        base = self._prefix(name) + "versions/"
        for item in self.objects.listing(base):
            number, _, leaf = item.key[len(base) :].partition("/")
            if not number.isdigit():
                continue
            if leaf == MANIFEST:
                manifests.add(int(number))
            elif leaf == DISCARDED:
                discarded.add(int(number))
        return sorted(manifests - discarded), max(manifests, default=0)

    def versions(self, name: str) -> list[int]:
        """Versions whose manifest is written and that were not discarded, oldest first."""
        return self._numbers(name)[0]

    def _manifest(self, name: str, version: int) -> dict[str, Any] | None:
        """A version's manifest: from the cache (manifests never change), else the store; None if there is none."""
        cached = self.folder(name) / MANIFEST_CACHE / f"{version}.json"
        with contextlib.suppress(OSError, json.JSONDecodeError):
            return dict(json.loads(cached.read_text(encoding="utf-8")))
        found = self.objects.get(f"{self._prefix(name)}versions/{version}/{MANIFEST}")
        if found is None or self.objects.get(f"{self._prefix(name)}versions/{version}/{DISCARDED}") is not None:
            return None
        try:
            manifest = json.loads(found.body)
        except json.JSONDecodeError as error:
            raise BrokenVersionError(f"{name} v{version}: its manifest is unreadable: {error}") from error
        cached.parent.mkdir(parents=True, exist_ok=True)
        temporary = cached.with_name(f".tmp-{uuid.uuid4().hex}")
        temporary.write_bytes(found.body)
        os.replace(temporary, cached)
        return dict(manifest)

    def _raw_metadata(self, name: str, version: int) -> Any:
        manifest = self._manifest(name, version)
        if manifest is None:
            raise NotFoundError(f"model '{name}' has no version {version}; versions: {self.versions(name)}")
        return manifest.get("metadata")

    def version_dir(self, name: str, version: int) -> Path:
        """The version's folder in the local cache, downloaded and checked against its manifest first if it
        is not there yet (a version that does not exist gives a folder that does not exist)."""
        folder = super().version_dir(name, version)
        if (folder / METADATA_FILE).is_file():
            with contextlib.suppress(OSError):
                os.utime(folder)  # most recently used: the last to leave the cache
            return folder
        manifest = self._manifest(name, version)
        if manifest is not None:
            self._download(name, version, manifest, folder)
            self._evict(keep=folder)
        return folder

    def _download(self, name: str, version: int, manifest: dict[str, Any], folder: Path) -> None:
        """Fetch a version's files into a temporary folder, check each against the manifest, rename into place."""
        temporary = folder.parent / f".tmp-{uuid.uuid4().hex}"
        temporary.mkdir(parents=True)
        try:
            for file_name, expected in sorted(manifest["files"].items()):
                target = temporary / check_name(file_name, "file")
                key = f"{self._prefix(name)}uploads/{manifest['upload']}/{file_name}"
                if not self.objects.download_file(key, target):
                    raise BrokenVersionError(f"{name} v{version}: {file_name} is missing from the store")
                if target.stat().st_size != expected["size"] or sha256_of(target) != expected["sha256"]:
                    raise BrokenVersionError(f"{name} v{version}: {file_name} does not match its manifest")
            (temporary / METADATA_FILE).write_text(json.dumps(manifest["metadata"], indent=2), encoding="utf-8")
            try:
                os.rename(temporary, folder)
            except OSError:
                if not (folder / METADATA_FILE).is_file():
                    raise
                shutil.rmtree(temporary, ignore_errors=True)  # another thread fetched it first
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise

    def _evict(self, keep: Path) -> None:
        """Remove the least recently used cached versions beyond `cache_versions` (never `keep`)."""
        cached = [path for path in self.root.glob("*/*") if path.name.isdigit() and path.is_dir() and path != keep]
        extra = len(cached) + 1 - self.cache_versions
        if extra <= 0:
            return
        for path in sorted(cached, key=lambda item: item.stat().st_mtime)[:extra]:
            gone = path.parent / f".tmp-evicted-{uuid.uuid4().hex}"
            with contextlib.suppress(OSError):
                os.rename(path, gone)
                shutil.rmtree(gone, ignore_errors=True)

    def problem(self) -> str | None:
        """Why the object store does not answer now (what `/ready` reports), None when it does."""
        return self.objects.problem()

    # Writing -----------------------------------------------------------------

    def check_writable(self, name: str) -> None:
        """Raise StoreNotWritableError unless an object could be written under the model's prefix now."""
        probe = f"{self._prefix(name)}.write-check-{uuid.uuid4().hex}"
        try:
            self.objects.put(probe, b"")
            self.objects.delete([probe])
        except StoreUnreachableError as error:
            raise StoreNotWritableError(f"the model store cannot be written ({error}); nothing was trained") from error

    def _stage_files(self, name: str, temporary: Path, files: dict[str, str]) -> str:
        """Upload the files under a fresh upload id (before the model's lock is taken); returns the id."""
        upload = uuid.uuid4().hex
        for file_name in files:
            self.objects.upload_file(temporary / file_name, f"{self._prefix(name)}uploads/{upload}/{file_name}")
        return upload

    def _drop_staged(self, name: str, staged: Any) -> None:
        """Delete an upload no manifest will name (else the sweep would, an hour later)."""
        with contextlib.suppress(StoreUnreachableError):
            uploaded = self.objects.listing(f"{self._prefix(name)}uploads/{staged}/")
            self.objects.delete([item.key for item in uploaded])

    def _rename_into_place(
        self,
        name: str,
        temporary: Path,
        metadata: dict[str, Any],
        files: dict[str, str],
        staged: Any = None,
    ) -> int:
        """Claim the next number for the staged upload with a create-only manifest."""
        upload = str(staged)
        sizes = {file_name: (temporary / file_name).stat().st_size for file_name in files}
        version = self._numbers(name)[1] + 1
        for _attempt in range(100):
            full = {**metadata, "format_version": FORMAT_VERSION, "name": name, "version": version, "files": files}
            manifest = {
                "upload": upload,
                "files": {file_name: {"sha256": files[file_name], "size": sizes[file_name]} for file_name in files},
                "metadata": full,
            }
            body = json.dumps(manifest, indent=2).encode()
            try:
                self.objects.put(f"{self._prefix(name)}versions/{version}/{MANIFEST}", body, create_only=True)
            except PreconditionFailedError:
                version += 1  # another writer took this number first
                continue
            # The writer's own files become the cached copy: no download of what it just uploaded.
            (temporary / METADATA_FILE).write_text(json.dumps(full, indent=2), encoding="utf-8")
            try:
                os.rename(temporary, self.folder(name) / str(version))
            except OSError:
                shutil.rmtree(temporary, ignore_errors=True)  # a reader fetched it meanwhile: that copy serves
            return version
        raise BrokenVersionError(f"could not allocate a version number for '{name}'")

    def discard_version(self, name: str, version: int) -> None:
        """Mark a failed job's version discarded (its number stays used), then delete its files."""
        with self.alias_lock(name):
            pointing = sorted(alias for alias, target in self.aliases(name).items() if target == version)
            if pointing:
                raise BrokenVersionError(f"version {version} of '{name}' is kept: aliases {pointing} point at it")
            manifest = self._manifest(name, version)
            if manifest is None:
                return
            marker = f"{self._prefix(name)}versions/{version}/{DISCARDED}"
            self.objects.put(marker, json.dumps({"at": time.time()}).encode())
        self._mase_cache.pop((name, version), None)
        with contextlib.suppress(FileNotFoundError):
            (self.folder(name) / MANIFEST_CACHE / f"{version}.json").unlink()
        shutil.rmtree(self.folder(name) / str(version), ignore_errors=True)
        uploaded = self.objects.listing(f"{self._prefix(name)}uploads/{manifest['upload']}/")
        self.objects.delete([item.key for item in uploaded])
        logger.warning("discarded version %d of '%s': the job that stored it failed", version, name)

    def remove_stale_temporaries(self) -> list[Path]:
        """Delete the cache's temporary folders and the store's uploads that no manifest names (older than a
        grace period, so a writer still uploading keeps its files)."""
        removed = super().remove_stale_temporaries()
        with contextlib.suppress(StoreUnreachableError):
            self.sweep_uploads()
        return removed

    def sweep_uploads(self, older_than_seconds: float = UPLOAD_GRACE_SECONDS) -> list[str]:
        """Delete uploads no manifest names whose newest object is older than `older_than_seconds`; their keys."""
        removed: list[str] = []
        now = time.time()
        for name in self.objects.children("models/"):
            if not NAME_PATTERN.fullmatch(name):
                continue
            base = f"{self._prefix(name)}uploads/"
            groups: dict[str, list[tuple[str, float]]] = {}
            for item in self.objects.listing(base):
                upload, _, _file = item.key[len(base) :].partition("/")
                groups.setdefault(upload, []).append((item.key, item.modified))
            if not groups:
                continue
            named = {str(manifest.get("upload")) for manifest in self._all_manifests(name)}
            for upload, items in groups.items():
                if upload in named or now - max(modified for _key, modified in items) < older_than_seconds:
                    continue
                keys = [key for key, _modified in items]
                self.objects.delete(keys)
                removed.extend(keys)
        if removed:
            logger.warning("swept %d object(s) of uploads that never got a manifest", len(removed))
        return removed

    def _all_manifests(self, name: str) -> Iterator[dict[str, Any]]:
        """Every manifest of a model, discarded versions included (their uploads are deleted by the discard)."""
        base = self._prefix(name) + "versions/"
        for item in self.objects.listing(base):
            if item.key.endswith("/" + MANIFEST):
                found = self.objects.get(item.key)
                if found is not None:
                    with contextlib.suppress(json.JSONDecodeError):
                        yield dict(json.loads(found.body))

    # Aliases -----------------------------------------------------------------

    def aliases(self, name: str) -> dict[str, int]:
        """Alias → version for a model ({} when none is set)."""
        return self._read_aliases(name)[0]

    def _read_aliases(self, name: str) -> tuple[dict[str, int], str | None]:
        found = self.objects.get(self._prefix(name) + "aliases.json")
        if found is None:
            return {}, None
        with contextlib.suppress(json.JSONDecodeError, AttributeError, ValueError):
            return {str(key): int(value) for key, value in json.loads(found.body).items()}, found.etag
        return {}, found.etag

    def alias_lock(self, name: str) -> contextlib.AbstractContextManager[None]:
        """This machine's lock, and a lease in the bucket that other machines' writers wait for (re-entrant)."""
        return self._held(name)

    @contextlib.contextmanager
    def _held(self, name: str) -> Iterator[None]:
        with _exclusive(self.folder(name) / ALIAS_LOCK_FILE):
            depths: dict[str, int] = self._lock_depth.__dict__.setdefault("depths", {})
            depths[name] = depths.get(name, 0) + 1
            try:
                if depths[name] > 1:
                    yield
                else:
                    with self._lease(name):
                        yield
            finally:
                depths[name] -= 1

    @contextlib.contextmanager
    def _lease(self, name: str) -> Iterator[None]:
        """Hold `models/<name>/lock.json`: created create-only; one whose lease ran out is taken over by
        compare-and-swap, so a holder that died blocks the others for at most LEASE_SECONDS."""
        key = self._prefix(name) + "lock.json"
        token = uuid.uuid4().hex
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        etag = self._take_lease(key, token)
        while etag is None:
            if time.monotonic() > deadline:
                raise StoreBusyError(f"model '{name}' is being changed by another writer; retry later")
            time.sleep(0.05)
            etag = self._take_lease(key, token)
        released = threading.Event()
        renewer = threading.Thread(target=self._renew_lease, args=(key, token, etag, released), daemon=True)
        renewer.start()
        try:
            yield
        finally:
            released.set()
            renewer.join()
            with contextlib.suppress(StoreUnreachableError):
                current = self.objects.get(key)
                if current is not None and json.loads(current.body).get("holder") == token:
                    self.objects.delete([key])

    def _take_lease(self, key: str, token: str) -> str | None:
        """The lease's ETag if this writer now holds it: created, or taken over once expired; else None."""
        body = self._lease_body(token)
        try:
            return self.objects.put(key, body, create_only=True)
        except PreconditionFailedError:
            pass
        current = self.objects.get(key)
        if current is None:
            return None
        with contextlib.suppress(json.JSONDecodeError, KeyError, TypeError, ValueError):
            if float(json.loads(current.body)["expires"]) < time.time():
                with contextlib.suppress(PreconditionFailedError):
                    return self.objects.put(key, body, if_match=current.etag)
        return None

    @staticmethod
    def _lease_body(token: str) -> bytes:
        return json.dumps({"holder": token, "expires": time.time() + LEASE_SECONDS}).encode()

    def _renew_lease(self, key: str, token: str, etag: str, released: threading.Event) -> None:
        """Push the lease's expiry forward while its holder works (compare-and-swap: never over another's)."""
        while not released.wait(LEASE_SECONDS / 3):
            try:
                etag = self.objects.put(key, self._lease_body(token), if_match=etag)
            except (PreconditionFailedError, StoreUnreachableError) as error:
                logger.error("the alias lock of %s could not be renewed (%s); another writer may take it", key, error)
                return

    def _change_aliases(
        self, name: str, change: Callable[[dict[str, int]], dict[str, Any] | None]
    ) -> dict[str, Any] | None:
        """Read the aliases and their ETag, apply `change`, log it, and write only if the ETag still holds;
        otherwise take the log entry back and run `change` again on what the other writer left."""
        for _round in range(CAS_ROUNDS):
            current, etag = self._read_aliases(name)
            entry = change(current)
            if entry is None:
                return None
            log_key = self._prefix(name) + "alias_log/" + _ordered_key()
            self.objects.put(log_key, json.dumps(entry).encode(), create_only=True)
            try:
                self.objects.put(
                    self._prefix(name) + "aliases.json",
                    json.dumps(current).encode(),
                    create_only=etag is None,
                    if_match=etag,
                )
                return entry
            except PreconditionFailedError:
                self.objects.delete([log_key])
            except BaseException:
                with contextlib.suppress(StoreUnreachableError):
                    self.objects.delete([log_key])
                raise
        raise StoreBusyError(f"the aliases of '{name}' kept changing under this writer; retry later")

    def alias_log(self, name: str) -> list[dict[str, Any]]:
        """Every alias change of a model, oldest first."""
        return self._entries(self._prefix(name) + "alias_log/")

    def attempts(self, name: str) -> list[dict[str, Any]]:
        """Every gate decision recorded for a model (the attempt ledger), oldest first."""
        return self._entries(self._prefix(name) + "attempts/")

    def record_attempt(self, name: str, entry: dict[str, Any]) -> None:
        """Add a gate decision to the attempt ledger: one object, written before the call returns."""
        self.objects.put(
            self._prefix(name) + "attempts/" + _ordered_key(), json.dumps(entry).encode(), create_only=True
        )

    def _entries(self, prefix: str) -> list[dict[str, Any]]:
        entries = []
        for item in sorted(self.objects.listing(prefix), key=lambda listed: listed.key):
            found = self.objects.get(item.key)
            if found is not None:
                with contextlib.suppress(json.JSONDecodeError):
                    entries.append(json.loads(found.body))
        return entries


def open_model_store(
    root: str | Path, store_url: str | None = None, cache_versions: int = DEFAULT_CACHE_VERSIONS
) -> ModelStore:
    """The folder store at `root`, or with `store_url` (s3://bucket/prefix) the object store cached under `root`."""
    if not store_url:
        return ModelStore(root)
    return RemoteModelStore(root, ObjectStore(store_url), cache_versions=cache_versions)


__all__ = ["RemoteModelStore", "StoreBusyError", "open_model_store"]
