"""API keys: only hashes on disk, changes seen by a running key ring, `python -m app keys`, and the start policy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.__main__ import AccessRefusedError, check_access
from app.core.config import Settings
from app.core.keys import KeyExistsError, KeyRing, create_key, digest_of, read_keys, revoke_key
from tests.helpers import ROOT
from training.errors import ConfigError, NotFoundError


def test_the_file_holds_the_hash_never_the_key(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    key = create_key(path, "desk", "predict")
    text = path.read_text()
    assert key.startswith("sc_") and len(key) > 40
    assert key not in text and digest_of(key) in text
    assert json.loads(text)["keys"][0]["name"] == "desk"
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_names_and_scopes_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    create_key(path, "desk", "predict")
    with pytest.raises(KeyExistsError, match="a key named 'desk' exists; revoke it first or choose another name"):
        create_key(path, "desk", "admin")
    with pytest.raises(ConfigError, match="unknown scope 'root'; scopes: predict, admin"):
        create_key(path, "ops", "root")
    with pytest.raises(NotFoundError, match=r"no key named 'ops'; keys: \['desk'\]"):
        revoke_key(path, "ops")


def test_a_running_ring_sees_new_and_revoked_keys(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    ring = KeyRing(path, recheck_seconds=0)
    key = create_key(path, "desk", "admin")
    found = ring.find(key)
    assert found is not None and found.name == "desk" and found.grants == {"predict", "admin"}
    assert ring.find(key + "x") is None
    revoke_key(path, "desk")
    assert ring.find(key) is None and ring.current() == []


def test_a_broken_file_keeps_the_keys_already_read(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    key = create_key(path, "desk", "predict")
    ring = KeyRing(path, recheck_seconds=0)
    path.write_text("{not json")
    assert ring.find(key) is not None
    assert ring.error is not None and ring.error.startswith(f"API keys file {path} cannot be read (JSONDecodeError")


def test_keys_command_creates_lists_and_revokes(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    environment = {**os.environ, "STOCKCAST_API_KEYS_FILE": str(path), "STOCKCAST_DATA_DIR": str(tmp_path)}

    def keys(*arguments: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "app", "keys", *arguments]
        return subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120)

    created = keys("create", "desk", "--scope", "predict")
    assert created.returncode == 0, created.stderr
    printed = created.stdout.splitlines()[-1]
    assert read_keys(path)[0].digest == digest_of(printed)
    listed = keys("list")
    assert json.loads(listed.stdout) == [
        {"name": "desk", "scope": "predict", "created_at": read_keys(path)[0].created_at}
    ]
    assert printed not in listed.stdout
    again = keys("create", "desk", "--scope", "admin")
    assert again.returncode == 2
    assert again.stderr == "stockcast: a key named 'desk' exists; revoke it first or choose another name\n"
    assert keys("revoke", "desk").returncode == 0 and read_keys(path) == []


def test_loopback_without_keys_serves_and_says_it_is_open(tmp_path: Path) -> None:
    (line,) = check_access(Settings(data_dir=tmp_path, host="127.0.0.1"))
    assert line.startswith(f"stockcast: OPEN: no API keys in {tmp_path / 'api_keys.json'}")


def test_another_address_without_keys_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AccessRefusedError, match=r"^refusing to serve on 0\.0\.0\.0 without API keys"):
        check_access(Settings(data_dir=tmp_path, host="0.0.0.0"))
    (line,) = check_access(Settings(data_dir=tmp_path, host="0.0.0.0", allow_anonymous=True))
    assert line.startswith("stockcast: WARNING: OPEN to the network on 0.0.0.0")


def test_first_start_creates_keys_and_prints_them_once(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, host="0.0.0.0", create_keys_on_first_start=True)
    lines = check_access(settings)
    printed = {line.split()[0]: line.split()[-1] for line in lines[1:3]}
    stored = {key.name: key for key in read_keys(settings.keys_file)}
    assert stored["admin"].scope == "admin" and stored["admin"].digest == digest_of(printed["admin"])
    assert stored["predict"].scope == "predict" and stored["predict"].digest == digest_of(printed["predict"])
    # The second start finds them and prints no key.
    assert check_access(settings) == [
        f"stockcast: 2 API key(s) in {settings.keys_file}; requests need 'Authorization: Bearer <key>'"
    ]
