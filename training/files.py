"""Files on disk: the names they may have, their hashes, and JSON written atomically.

Shared by the model store, the dataset store and the job records; nothing
here knows what a model or a job is.
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


def check_name(name: str, kind: str = "model") -> str:
    """Names become file and folder names: letters, digits, '_', '-', '.' only."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ConfigError(
            f"invalid {kind} name {name!r}: use 1-64 letters, digits, '_', '-' or '.', starting with a letter or digit"
        )
    return name


def sha256_of(path: Path) -> str:
    """Hex digest of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a sibling temporary file, fsync it, then rename over `path`."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def now_iso() -> str:
    """UTC timestamp used in metadata and logs."""
    return datetime.now(UTC).isoformat(timespec="seconds")
