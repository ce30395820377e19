"""Files on disk: the names they may have, their hashes, and JSON written atomically.

Shared by the model store, the dataset store and the job records; nothing
here knows what a model or a job is.
See docs/design.md, "Store format (`metadata.json`, format version 1)".
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from training.errors import ConfigError

# Model and dataset names become folder and file names. `fullmatch`, not
# `match` with `$`: `$` also matches before a trailing newline.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
ALIAS_PATTERN = re.compile(r"[a-z][a-z0-9_-]{0,31}")
JOB_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")


def shown(value: object, limit: int = 40) -> str:
    """`value` quoted for an error message, cut to `limit` characters (a hostile name can be megabytes)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(str(value))} characters)"


def check_name(name: str, kind: str = "model") -> str:
    """The one name rule for models and datasets, whatever the route: they become file and folder names.

    1-64 letters, digits, '_', '-' or '.', starting with a letter or digit,
    matched in full: so no separator, no `..` or other dot-only name, no
    newline (`re.match` with `$` let a trailing one through), no NUL, and a
    length every filesystem takes.
    """
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ConfigError(
            f"invalid {kind} name {shown(name)}: use 1-64 letters, digits, '_', '-' or '.',"
            " starting with a letter or digit"
        )
    return name


def check_job_id(job_id: str) -> str:
    """Job ids come back in URLs: 1-64 letters, digits, '_' or '-' (the store's own are 12 hex digits)."""
    if not isinstance(job_id, str) or not JOB_ID_PATTERN.fullmatch(job_id):
        raise ConfigError(f"invalid job id {shown(job_id)}: use 1-64 letters, digits, '_' or '-'")
    return job_id


def check_alias(alias: str) -> str:
    """Aliases are keys in a JSON file, but still read from URLs: 1-32 lower-case letters, digits, '_' or '-'."""
    if not isinstance(alias, str) or not ALIAS_PATTERN.fullmatch(alias):
        raise ConfigError(f"invalid alias {shown(alias)}: use 1-32 lower-case letters, digits, '_' or '-'")
    return alias


def sha256_of(path: Path) -> str:
    """Hex digest of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a sibling temporary file, fsync it, then rename over `path`."""
    write_bytes_atomic(path, json.dumps(data, indent=2, sort_keys=True).encode("utf-8"))


def write_bytes_atomic(path: Path, content: bytes) -> None:
    """Write bytes to a sibling temporary file, fsync it, then rename over `path`: readers see all or nothing."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def now_iso() -> str:
    """UTC timestamp used in metadata and logs."""
    return datetime.now(UTC).isoformat(timespec="seconds")
