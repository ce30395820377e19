"""The versioned model store: `models/<name>/<version>/{model.keras, metadata.json}`.

A version is written into a hidden temporary folder and renamed into place,
so a reader sees a whole version or none. Versions are integers that only
increase. Aliases (`champion` and any others) live beside the versions with
an append-only log of every change, and the gate's decisions in an
append-only attempt ledger.
See docs/design.md, "Store format (`metadata.json`, format version 1)".
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from training.errors import BrokenVersionError, NotFoundError, StockcastError
from training.files import NAME_PATTERN, check_alias, check_name, now_iso, sha256_of, write_json_atomic
from training.gate import headline_ratio

logger = logging.getLogger("stockcast.store")

# Where the command line and the service look for models unless told otherwise.
DEFAULT_ROOT = Path("models")
FORMAT_VERSION = 1
MODEL_FILE = "model.keras"
METADATA_FILE = "metadata.json"
# The version report chart, drawn once at training time (training.version_report.write_version_report).
REPORT_FILE = "report.png"
ALIASES_FILE = "aliases.json"
ALIAS_LOG_FILE = "alias_log.jsonl"
# Every promotion-gate decision of a model, one JSON line each (the attempt ledger, training.gate).
ATTEMPTS_FILE = "attempts.jsonl"
COUNTER_FILE = ".last_version"
CHAMPION = "champion"
# The shadow challenger: a candidate with backtest skill but not enough evidence yet (docs/ledger.md).
CHALLENGER = "challenger"
ALIAS_LOCK_FILE = ".aliases.lock"
REQUIRED_METADATA = (
    "format_version",
    "name",
    "version",
    "architecture",
    "hyperparameters",
    "features",
    "label",
    "window",
    "horizon",
    "transform",
    "scaler",
    "data",
    "split",
    "metrics",
    "libraries",
    "created_at",
    "files",
)


# Per lock file: a re-entrant lock for the threads of this process, and how
# deeply the holding thread has entered it (flock alone would block a thread
# that re-enters, since each open() is a separate lock owner).
_alias_thread_locks: dict[Path, threading.RLock] = {}
_alias_depth: dict[Path, int] = {}
_alias_locks_guard = threading.Lock()


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """Hold `path`'s lock against other threads and other processes (flock; NFSv4 and local disks honour it)."""
    with _alias_locks_guard:
        thread_lock = _alias_thread_locks.setdefault(path, threading.RLock())
    with thread_lock:
        if _alias_depth.get(path, 0):
            _alias_depth[path] += 1
            try:
                yield
            finally:
                _alias_depth[path] -= 1
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            _alias_depth[path] = 1
            try:
                yield
            finally:
                _alias_depth[path] = 0
                fcntl.flock(handle, fcntl.LOCK_UN)


class StoreNotWritableError(StockcastError):
    """The model store's folder cannot be written (read-only, full, or not a folder)."""

    # The service's storage, not the request, is at fault; it may be fixed without a new request.
    status_code = 503


class JobVersionExistsError(StockcastError):
    """A job's version is already stored (by an earlier attempt of the same job): one version per job."""

    status_code = 409

    def __init__(self, name: str, version: int, job_id: str) -> None:
        super().__init__(f"job {job_id} already stored version {version} of '{name}'")
        self.version = version


class ModelStore:
    """Filesystem store of model versions and their aliases."""

    # False: the folder is the store. True (training.remote_store): the folder caches an object store.
    remote = False

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        # The registry asks for the default every few seconds; metadata is read once per version.
        self._mase_cache: dict[tuple[str, int], float | None] = {}

    # Reading -----------------------------------------------------------------

    def folder(self, name: str) -> Path:
        """A model's folder. Every path the store touches goes through here, so a name that breaks the
        name rule (`..`, a separator, a newline, NUL, too long) is refused with ConfigError before it
        can resolve anywhere, let alone outside the store."""
        return self.root / check_name(name)

    def model_names(self) -> list[str]:
        """Names that have at least one complete version (folders whose names break the rule are not models)."""
        if not self.root.is_dir():
            return []
        return sorted(
            path.name
            for path in self.root.iterdir()
            if NAME_PATTERN.fullmatch(path.name) and path.is_dir() and self.versions(path.name)
        )

    def versions(self, name: str) -> list[int]:
        """Complete versions of a model, oldest first (temporary folders are skipped)."""
        folder = self.folder(name)
        if not folder.is_dir():
            return []
        return sorted(
            int(path.name) for path in folder.iterdir() if path.name.isdigit() and (path / METADATA_FILE).is_file()
        )

    def version_dir(self, name: str, version: int) -> Path:
        """Folder of one version (it may not exist)."""
        return self.folder(name) / str(version)

    def read_metadata(self, name: str, version: int) -> dict[str, Any]:
        """Metadata of a version, checked for the keys and files it must have."""
        metadata = self._raw_metadata(name, version)
        if not isinstance(metadata, dict):
            raise BrokenVersionError(f"{name} v{version}: metadata.json is not an object")
        missing = [key for key in REQUIRED_METADATA if key not in metadata]
        if missing:
            raise BrokenVersionError(f"{name} v{version}: metadata.json lacks {missing}")
        if metadata["format_version"] != FORMAT_VERSION:
            raise BrokenVersionError(
                f"{name} v{version}: format_version {metadata['format_version']} is not supported "
                f"(this build reads {FORMAT_VERSION})"
            )
        if metadata["name"] != name or metadata["version"] != version:
            raise BrokenVersionError(f"{name} v{version}: metadata names {metadata['name']} v{metadata['version']}")
        return metadata

    def _raw_metadata(self, name: str, version: int) -> Any:
        """A version's metadata as stored, not yet checked (NotFoundError when there is no such version)."""
        folder = self.version_dir(name, version)
        if not folder.is_dir():
            raise NotFoundError(f"model '{name}' has no version {version}; versions: {self.versions(name)}")
        try:
            return json.loads((folder / METADATA_FILE).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise BrokenVersionError(f"{name} v{version}: metadata.json is unreadable: {error}") from error

    def verified_model_path(self, name: str, version: int, metadata: dict[str, Any]) -> Path:
        """Path of the Keras file after checking it exists and matches its recorded hash."""
        path = self.version_dir(name, version) / MODEL_FILE
        if not path.is_file():
            raise BrokenVersionError(f"{name} v{version}: {MODEL_FILE} is missing")
        expected = metadata["files"].get(MODEL_FILE)
        if expected != sha256_of(path):
            raise BrokenVersionError(f"{name} v{version}: {MODEL_FILE} does not match its sha256 in metadata")
        return path

    def problem(self) -> str | None:
        """Why the store cannot be reached now, None when it can (a local folder always can be asked)."""
        return None

    # Writing -----------------------------------------------------------------

    def check_writable(self, name: str) -> None:
        """Raise StoreNotWritableError unless a version of `name` could be written now.

        A training job calls this before it trains, so a read-only store is
        found at once rather than when the finished model is saved.
        """
        folder = self.folder(name)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / f".write-check-{uuid.uuid4().hex}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as error:
            raise StoreNotWritableError(
                f"the model store cannot be written ({error.strerror or type(error).__name__}); nothing was trained"
            ) from error

    def _last_allocated(self, name: str) -> int:
        counter = self.folder(name) / COUNTER_FILE
        with contextlib.suppress(OSError, ValueError):
            return int(counter.read_text().strip())
        return 0

    def save_version(
        self,
        name: str,
        write_files: Callable[[Path], None],
        metadata: dict[str, Any],
    ) -> int:
        """Write a new version atomically and return its number.

        `write_files(folder)` writes the model file(s) into a temporary folder;
        this method adds metadata.json (with the version and file hashes) and
        renames the folder into place. If anything fails, the temporary folder
        is removed and no version becomes visible.
        """
        folder = self.folder(name)
        folder.mkdir(parents=True, exist_ok=True)
        temporary = folder / f".tmp-{uuid.uuid4().hex}"
        temporary.mkdir()
        job_id = (metadata.get("data") or {}).get("job_id")
        try:
            write_files(temporary)
            files = {path.name: sha256_of(path) for path in sorted(temporary.iterdir()) if path.is_file()}
            if MODEL_FILE not in files:
                raise BrokenVersionError(f"the writer did not produce {MODEL_FILE}")
            # Before the lock: a writer that dies while staging (an upload) holds up no one.
            staged = self._stage_files(name, temporary, files)
            # A job's attempts check and rename under the model's lock: two attempts of one job
            # (one retried while the other was cut off from the job database) store one version.
            with self.alias_lock(name) if job_id else contextlib.nullcontext():
                if job_id:
                    earlier = self.version_of_job(name, job_id)
                    if earlier is not None:
                        self._drop_staged(name, staged)
                        raise JobVersionExistsError(name, earlier, job_id)
                return self._rename_into_place(name, temporary, metadata, files, staged)
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise

    def _stage_files(self, name: str, temporary: Path, files: dict[str, str]) -> Any:
        """Whatever a version's files need before they can be committed (nothing here: they are renamed)."""
        return None

    def _drop_staged(self, name: str, staged: Any) -> None:
        """Undo `_stage_files` for files that will never be committed (nothing to undo here)."""

    def version_of_job(self, name: str, job_id: str) -> int | None:
        """The version training job `job_id` stored, if any."""
        for metadata in self.iter_metadata(name):
            if (metadata.get("data") or {}).get("job_id") == job_id:
                return int(metadata["version"])
        return None

    def _rename_into_place(
        self,
        name: str,
        temporary: Path,
        metadata: dict[str, Any],
        files: dict[str, str],
        staged: Any = None,
    ) -> int:
        folder = self.folder(name)
        for _attempt in range(100):
            version = max([self._last_allocated(name), *self.versions(name), 0]) + 1
            full = {
                **metadata,
                "format_version": FORMAT_VERSION,
                "name": name,
                "version": version,
                "files": files,
            }
            write_json_atomic(temporary / METADATA_FILE, full)
            try:
                # rename() onto an existing non-empty folder fails, so two
                # writers racing for one number cannot overwrite each other.
                os.rename(temporary, folder / str(version))
            except OSError:
                if (folder / str(version)).exists():
                    continue
                raise
            try:
                write_json_atomic(folder / COUNTER_FILE, version)
            except BaseException:
                # Visible for a moment, but not whole: the store must not keep it.
                self.discard_version(name, version)
                raise
            return version
        raise BrokenVersionError(f"could not allocate a version number for '{name}'")

    def discard_version(self, name: str, version: int) -> None:
        """Remove a version that a failed job stored: renamed out of sight in one step, then deleted.

        Refused (BrokenVersionError) while an alias points at it: a version
        that serves under an alias is not taken away from under its callers.
        """
        with self.alias_lock(name):
            pointing = sorted(alias for alias, target in self.aliases(name).items() if target == version)
            if pointing:
                raise BrokenVersionError(f"version {version} of '{name}' is kept: aliases {pointing} point at it")
            source = self.version_dir(name, version)
            if not source.is_dir():
                return
            gone = self.folder(name) / f".tmp-discarded-{version}-{uuid.uuid4().hex}"
            os.rename(source, gone)
        self._mase_cache.pop((name, version), None)
        shutil.rmtree(gone, ignore_errors=True)
        logger.warning("discarded version %d of '%s': the job that stored it failed", version, name)

    def remove_stale_temporaries(self) -> list[Path]:
        """Delete temporary folders left by a writer that crashed mid-write."""
        removed = []
        if self.root.is_dir():
            for path in self.root.glob("*/.tmp-*"):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        return removed

    # Aliases -----------------------------------------------------------------

    def aliases(self, name: str) -> dict[str, int]:
        """Alias → version for a model ({} when none is set)."""
        path = self.folder(name) / ALIASES_FILE
        if not path.is_file():
            return {}
        with contextlib.suppress(OSError, json.JSONDecodeError):
            data = json.loads(path.read_text(encoding="utf-8"))
            return {str(key): int(value) for key, value in data.items()}
        return {}

    def alias_lock(self, name: str) -> contextlib.AbstractContextManager[None]:
        """Serialise alias changes of one model across threads and processes.

        The promotion gate reads `champion` and then moves it; two jobs of one
        model finishing together must not both read the old champion. Held
        around that read and write, and by every alias write; re-entrant.
        """
        return _exclusive(self.folder(name) / ALIAS_LOCK_FILE)

    def set_alias(
        self,
        name: str,
        alias: str,
        version: int,
        reason: str = "",
        by: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Point an alias at a version, log the change, and return the log entry.

        `by` names who moved it (the API key's name); the log keeps it, and
        `details` (the evidence behind an automatic move).
        """
        check_alias(alias)
        with self.alias_lock(name):
            return self._set_alias(name, alias, version, reason, by, details)

    def _set_alias(
        self,
        name: str,
        alias: str,
        version: int,
        reason: str,
        by: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        if version not in self.versions(name):
            raise NotFoundError(f"model '{name}' has no version {version}; versions: {self.versions(name)}")

        def move(current: dict[str, int]) -> dict[str, Any]:
            entry: dict[str, Any] = {
                "alias": alias,
                "from": current.get(alias),
                "to": version,
                "at": now_iso(),
                "reason": reason,
            }
            if by is not None:
                entry["by"] = by
            entry.update(details or {})
            current[alias] = version
            return entry

        entry = self._change_aliases(name, move)
        assert entry is not None  # a move always makes an entry
        return entry

    def remove_alias(
        self, name: str, alias: str, reason: str, by: str | None = None, details: dict[str, Any] | None = None
    ) -> dict[str, Any] | None:
        """Take an alias away, log it (`to` null, with `details` such as the figures that led to it) and return
        the log entry; None when the model had no such alias."""
        check_alias(alias)

        def take_away(current: dict[str, int]) -> dict[str, Any] | None:
            if alias not in current:
                return None
            entry: dict[str, Any] = {"alias": alias, "from": current.pop(alias), "to": None, "at": now_iso()}
            entry.update(reason=reason, **({"by": by} if by is not None else {}), **(details or {}))
            return entry

        with self.alias_lock(name):
            return self._change_aliases(name, take_away)

    def _change_aliases(
        self, name: str, change: Callable[[dict[str, int]], dict[str, Any] | None]
    ) -> dict[str, Any] | None:
        """Apply `change` (it edits the aliases in place and returns the log entry, or None for no change) to
        the aliases as stored now, and write the result with its log entry. Called under `alias_lock`; a
        backend without a lock that spans machines (the object store) re-runs `change` when it loses a race."""
        current = self.aliases(name)
        entry = change(current)
        if entry is not None:
            self._write_aliases(name, current, entry)
        return entry

    def _write_aliases(self, name: str, aliases: dict[str, int], entry: dict[str, Any]) -> None:
        """The log line first, the move second: if the move fails, cutting the log back (which needs no
        free space) leaves both as they were; the other order could leave a move without its line."""
        log = self.folder(name) / ALIAS_LOG_FILE
        logged_size = log.stat().st_size if log.is_file() else 0
        try:
            with open(log, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(entry) + "\n")
            write_json_atomic(self.folder(name) / ALIASES_FILE, aliases)
        except BaseException:
            with contextlib.suppress(OSError):
                os.truncate(log, logged_size)
            raise

    def alias_log(self, name: str) -> list[dict[str, Any]]:
        """Every alias change of a model, oldest first."""
        return self._json_lines(self.folder(name) / ALIAS_LOG_FILE)

    def attempts(self, name: str) -> list[dict[str, Any]]:
        """Every gate decision recorded for a model (the attempt ledger), oldest first."""
        return self._json_lines(self.folder(name) / ATTEMPTS_FILE)

    def record_attempt(self, name: str, entry: dict[str, Any]) -> None:
        """Append a gate decision to the model's attempt ledger (call under `alias_lock`, as the gate does).

        Fsynced: a later attempt must see it, or it could be judged at a level already spent.
        """
        path = self.folder(name) / ATTEMPTS_FILE
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    @staticmethod
    def _json_lines(path: Path) -> list[dict[str, Any]]:
        if not path.is_file():
            return []
        entries = []
        for line in path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                entries.append(json.loads(line))
        return entries

    def _gate_mase(self, name: str, version: int) -> float | None:
        """A version's gate MASE, read once: versions never change after their rename."""
        key = (name, version)
        if key not in self._mase_cache:
            try:
                self._mase_cache[key] = headline_ratio(self.read_metadata(name, version))[0]
            except BrokenVersionError:
                return None  # not cached: a repaired version is scored next time
        return self._mase_cache[key]

    def default_version(self, name: str) -> int | None:
        """The version served when a request names none.

        The champion when there is one. Before any version has passed the
        promotion gate, the version with the lowest gate MASE (the newest
        among equals), so that even then a worse model never silently
        replaces a better one.
        """
        versions = self.versions(name)
        if not versions:
            return None
        champion = self.aliases(name).get(CHAMPION)
        if champion in versions:
            return champion
        scored = [(mase, version) for version in versions if (mase := self._gate_mase(name, version)) is not None]
        if not scored:
            return versions[-1]
        best = min(mase for mase, _ in scored)
        return max(version for mase, version in scored if mase == best)

    def resolve(self, name: str, version: int | None = None, alias: str | None = None) -> int:
        """The version a request means: explicit, by alias, else the default (see `default_version`)."""
        versions = self.versions(name)
        if not versions:
            raise NotFoundError(f"unknown model '{name}'; models: {self.model_names()}")
        if version is not None:
            if version not in versions:
                raise NotFoundError(f"model '{name}' has no version {version}; versions: {versions}")
            return version
        aliases = self.aliases(name)
        if alias is not None:
            if alias not in aliases:
                raise NotFoundError(f"model '{name}' has no alias '{alias}'; aliases: {sorted(aliases)}")
            return aliases[alias]
        default = self.default_version(name)
        assert default is not None  # versions is not empty
        return default

    def iter_metadata(self, name: str) -> Iterator[dict[str, Any]]:
        """Metadata of every readable version, skipping broken ones."""
        for version in self.versions(name):
            with contextlib.suppress(BrokenVersionError):
                yield self.read_metadata(name, version)
