"""A service that has had keys never opens because the keys file vanished, emptied or lost its last key."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from app.api.auth import ANONYMOUS, Authenticator, UnauthenticatedError
from app.core.keys import KeyRing, create_key, revoke_key, write_keys

REVOKED = "every API key of this service is revoked; create one with `python -m app keys create NAME --scope admin`"


def loopback_authenticator(path: Path) -> Authenticator:
    """What a keyless loopback service runs: anonymous callers are allowed while there are no keys."""
    return Authenticator(KeyRing(path, recheck_seconds=0), anonymous_allowed=True)


def test_without_keys_ever_a_loopback_service_admits_anonymous_callers(tmp_path: Path) -> None:
    authenticator = loopback_authenticator(tmp_path / "keys.json")
    assert authenticator.check(None, "admin", "POST", "/train") == ANONYMOUS


def test_a_vanished_keys_file_keeps_the_last_keys(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "keys.json"
    key = create_key(path, "desk", "admin")
    authenticator = loopback_authenticator(path)
    path.unlink()
    with caplog.at_level(logging.ERROR, logger="stockcast.keys"):
        with pytest.raises(UnauthenticatedError, match="missing API key"):
            authenticator.check(None, "admin", "POST", "/train")
        with pytest.raises(UnauthenticatedError, match="invalid API key"):
            authenticator.check(b"Bearer sc_bogus", "admin", "POST", "/train")
    assert authenticator.check(f"Bearer {key}".encode(), "admin", "POST", "/train") == "desk"
    assert authenticator.ring.error == f"API keys file {path} is missing; the service keeps the keys it read before"
    assert [record.getMessage() for record in caplog.records] == [
        f"API keys file {path} is gone; keeping the 1 keys read before"
    ]


@pytest.mark.parametrize("how", ["revoke the last key", "write an empty list"])
def test_losing_every_key_refuses_everyone(tmp_path: Path, how: str) -> None:
    path = tmp_path / "keys.json"
    key = create_key(path, "desk", "admin")
    authenticator = loopback_authenticator(path)
    if how == "revoke the last key":
        revoke_key(path, "desk")
    else:
        write_keys(path, [])
    for authorization in (None, b"Bearer sc_bogus", f"Bearer {key}".encode()):
        with pytest.raises(UnauthenticatedError) as refused:
            authenticator.check(authorization, "admin", "POST", "/train")
        assert str(refused.value) == REVOKED


def test_a_new_key_after_every_key_was_revoked_lets_its_holder_in(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    create_key(path, "desk", "admin")
    authenticator = loopback_authenticator(path)
    revoke_key(path, "desk")
    key = create_key(path, "ops", "admin")
    assert authenticator.check(f"Bearer {key}".encode(), "admin", "POST", "/train") == "ops"
