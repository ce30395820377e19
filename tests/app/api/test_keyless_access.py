"""Who gets in without a key: keys fail closed, and a keyless service answers only local callers by local names."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from app.api.auth import ANONYMOUS, Authenticator, MisdirectedError, UnauthenticatedError
from app.core.keys import KeyRing, create_key, revoke_key, write_keys

REVOKED = "every API key of this service is revoked; create one with `python -m app keys create NAME --scope admin`"


def loopback_authenticator(path: Path) -> Authenticator:
    """What a keyless loopback service runs: anonymous callers are allowed while there are no keys."""
    return Authenticator(KeyRing(path, recheck_seconds=0), "local")


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


LOCAL = ("127.0.0.1", 8000)


@pytest.mark.parametrize(
    ("server", "host"),
    [
        (("127.0.0.1", 8000), b"127.0.0.1:8000"),
        (("::1", 8000), b"[::1]:8000"),
        (("127.0.0.1", 8000), b"localhost:8000"),
        (("/run/stockcast.sock", None), b"localhost"),
        (("127.0.0.1", 8000), None),
    ],
)
def test_a_keyless_loopback_service_answers_local_callers(
    tmp_path: Path, server: tuple[str, int | None], host: bytes | None
) -> None:
    authenticator = loopback_authenticator(tmp_path / "keys.json")
    assert authenticator.check(None, "admin", "POST", "/train", server, host) == ANONYMOUS


def test_a_keyless_service_reached_on_another_address_refuses_everyone(tmp_path: Path) -> None:
    # Finding 3: `uvicorn app.main:app --host 0.0.0.0` without keys answered every remote caller.
    authenticator = loopback_authenticator(tmp_path / "keys.json")
    with pytest.raises(UnauthenticatedError) as refused:
        authenticator.check(None, "admin", "PUT", "/models/tiny/aliases/champion", ("10.1.2.3", 8000), b"10.1.2.3")
    assert str(refused.value) == (
        "this service has no API keys and this request reached it on 10.1.2.3, an address other machines can"
        " reach; create a key with `python -m app keys create NAME --scope admin`, or bind to 127.0.0.1"
    )


def test_a_keyless_service_refuses_a_foreign_host_name(tmp_path: Path) -> None:
    # Finding 8: DNS rebinding: a page on rebind.example resolved to 127.0.0.1 moved an alias.
    authenticator = loopback_authenticator(tmp_path / "keys.json")
    with pytest.raises(MisdirectedError) as refused:
        authenticator.check(None, "admin", "PUT", "/models/tiny/aliases/champion", LOCAL, b"rebind.example")
    assert refused.value.status_code == 421
    assert str(refused.value) == (
        "Host 'rebind.example' is not this service's name: without API keys it answers only requests addressed"
        " to localhost or a loopback address (or a name in STOCKCAST_ALLOWED_HOSTS)"
    )
    named = Authenticator(KeyRing(tmp_path / "keys.json", recheck_seconds=0), "local", ["Stockcast.Internal"])
    assert named.check(None, "admin", "POST", "/train", LOCAL, b"stockcast.internal:8000") == ANONYMOUS


def test_an_explicitly_open_service_answers_everyone(tmp_path: Path) -> None:
    authenticator = Authenticator(KeyRing(tmp_path / "keys.json", recheck_seconds=0), "everywhere")
    assert authenticator.check(None, "admin", "POST", "/train", ("10.1.2.3", 8000), b"example.com") == ANONYMOUS
