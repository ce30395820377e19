"""API keys: a JSON file of names, scopes and SHA-256 hashes; the keys themselves are never stored.

A key is 32 random bytes (URL-safe base64, prefixed `sc_` so a leaked one is
easy to grep for). Only its SHA-256 is written: with 256 bits of randomness a
fast hash is as safe as a slow one. Presented keys are compared with every
stored hash with `hmac.compare_digest`, so timing reveals nothing. A
`KeyRing` rereads the file when its modification time changes, checked at
most once per `recheck_seconds`: `keys create` and `keys revoke` take effect
in a running service without a restart. See docs/design.md, "Service".
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.errors import ConfigError, NotFoundError, StockcastError
from training.files import check_name, now_iso, write_json_atomic

PREDICT, ADMIN = "predict", "admin"
SCOPES = (PREDICT, ADMIN)
# What each scope grants: admin can also do everything predict can.
GRANTS = {PREDICT: frozenset({PREDICT}), ADMIN: frozenset({PREDICT, ADMIN})}
KEY_PREFIX = "sc_"

logger = logging.getLogger("stockcast.keys")


class KeyExistsError(StockcastError):
    """A key of that name exists already."""

    status_code = 409


@dataclass(frozen=True)
class ApiKey:
    """A stored key: its name, what it may do, and the hash of the secret."""

    name: str
    scope: str
    digest: str
    created_at: str

    @property
    def grants(self) -> frozenset[str]:
        """Scopes this key satisfies."""
        return GRANTS[self.scope]

    def public(self) -> dict[str, str]:
        """What `keys list` shows: never the hash."""
        return {"name": self.name, "scope": self.scope, "created_at": self.created_at}


def digest_of(key: str | bytes) -> str:
    """SHA-256 of a key (text, or the bytes of a request header), as stored in the keys file."""
    raw = key if isinstance(key, bytes) else key.encode("utf-8", "surrogateescape")
    return hashlib.sha256(raw).hexdigest()


def new_key() -> str:
    """A fresh random key."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def read_keys(path: Path) -> list[ApiKey]:
    """Keys stored in `path` ([] if the file does not exist); a malformed file raises ConfigError."""
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return [
            ApiKey(
                name=str(item["name"]),
                scope=str(item["scope"]),
                digest=str(item["sha256"]),
                created_at=item["created_at"],
            )
            for item in data["keys"]
            if item["scope"] in GRANTS
        ]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"API keys file {path} cannot be read ({type(error).__name__}: {error})") from error


def write_keys(path: Path, keys: list[ApiKey]) -> None:
    """Store `keys` atomically, readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    records = [{"name": k.name, "scope": k.scope, "sha256": k.digest, "created_at": k.created_at} for k in keys]
    # The hashes do not let anyone in, but the file says who may do what: owner only.
    previous = os.umask(0o077)
    try:
        write_json_atomic(path, {"keys": records})
    finally:
        os.umask(previous)


def create_key(path: Path, name: str, scope: str) -> str:
    """Add a key named `name` with `scope`; returns the key, which is stored only as its hash."""
    check_name(name, "key")
    if scope not in GRANTS:
        raise ConfigError(f"unknown scope {scope!r}; scopes: {', '.join(SCOPES)}")
    keys = read_keys(path)
    if any(key.name == name for key in keys):
        raise KeyExistsError(f"a key named '{name}' exists; revoke it first or choose another name")
    key = new_key()
    write_keys(path, [*keys, ApiKey(name=name, scope=scope, digest=digest_of(key), created_at=now_iso())])
    return key


def revoke_key(path: Path, name: str) -> None:
    """Remove the key named `name`."""
    keys = read_keys(path)
    if not any(key.name == name for key in keys):
        raise NotFoundError(f"no key named '{name}'; keys: {[key.name for key in keys]}")
    write_keys(path, [key for key in keys if key.name != name])


class KeyRing:
    """The keys file as the service sees it, re-read when it changes."""

    def __init__(self, path: Path, recheck_seconds: float = 1.0) -> None:
        self.path = path
        self.recheck_seconds = recheck_seconds
        self.keys: list[ApiKey] = []
        # Once keys have existed the service never opens again by losing them: see `refresh`.
        self.had_keys = False
        self._stamp: tuple[int, int, int] | None = None
        self._checked_at = float("-inf")
        self.error: str | None = None
        self.refresh()

    def refresh(self) -> None:
        """Re-read the file if its size, modification time or inode changed since the last read."""
        self._checked_at = time.monotonic()
        stamp = None
        with contextlib.suppress(OSError):
            status = os.stat(self.path)
            stamp = (status.st_mtime_ns, status.st_size, status.st_ino)
        if stamp == self._stamp:
            return
        if stamp is None and self.had_keys:
            # A vanished file is an accident (a volume not mounted, a bad deploy), not a revocation:
            # keep the keys we had rather than open the service to anyone.
            if self.error is None:
                logger.error("API keys file %s is gone; keeping the %d keys read before", self.path, len(self.keys))
            self.error = f"API keys file {self.path} is missing; the service keeps the keys it read before"
            self._stamp = stamp
            return
        try:
            self.keys = read_keys(self.path)
            self.error = None
        except ConfigError as error:
            # Keep the keys we had: a half-edited file must not open the service.
            self.error = str(error)
            return
        if self.keys:
            self.had_keys = True
        elif self.had_keys:
            logger.warning("every API key in %s is revoked: every guarded request is refused", self.path)
        self._stamp = stamp

    def current(self) -> list[ApiKey]:
        """The keys, re-checked against the file at most once per `recheck_seconds`."""
        if time.monotonic() - self._checked_at >= self.recheck_seconds:
            self.refresh()
        return self.keys

    def find(self, presented: str | bytes) -> ApiKey | None:
        """The stored key matching `presented`, compared in constant time against every stored hash."""
        digest = digest_of(presented)
        found = None
        for key in self.current():
            if hmac.compare_digest(digest, key.digest):
                found = key
        return found


def summary(keys: list[ApiKey]) -> list[dict[str, Any]]:
    """Names, scopes and creation times, for `keys list`."""
    return [key.public() for key in keys]
