"""The Dockerfile and compose file: linted, checked against each other, and the
container's command run for real outside a container (no Docker engine here)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from tests.helpers import free_port, polling_client, wait_until

ROOT = Path(__file__).resolve().parents[1]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(instruction, arguments) pairs with line continuations joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, arguments = line.partition(" ")
            pairs.append((instruction.upper(), arguments.strip()))
    return pairs


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction, arguments in dockerfile_instructions():
        if instruction == "ENV":
            env.update(dict(re.findall(r"(\w+)=(\S+)", arguments)))
    return env


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_is_slim_non_root_with_healthcheck_and_volumes() -> None:
    instructions = dockerfile_instructions()
    kinds = [instruction for instruction, _ in instructions]
    assert any(args.startswith("python:3.11-slim") for kind, args in instructions if kind == "FROM")
    user = [args for kind, args in instructions if kind == "USER"]
    assert user and not user[-1].startswith(("root", "0"))
    assert "HEALTHCHECK" in kinds and "/health" in next(a for k, a in instructions if k == "HEALTHCHECK")
    volumes = json.loads(next(args for kind, args in instructions if kind == "VOLUME"))
    env = dockerfile_env()
    assert set(volumes) == {env["STOCKCAST_MODELS_DIR"], env["STOCKCAST_DATA_DIR"]}
    assert json.loads(next(args for kind, args in instructions if kind == "CMD")) == ["python", "-m", "app"]
    assert not any("[dev]" in args for kind, args in instructions if kind == "RUN")  # runtime deps only


def test_compose_file_matches_the_image() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    api = compose["services"]["api"]
    env = dockerfile_env()
    assert "8000:8000" in api["ports"]
    mounted = {volume.split(":")[1] for volume in api["volumes"]}
    assert mounted == {env["STOCKCAST_MODELS_DIR"], env["STOCKCAST_DATA_DIR"]}
    assert api["environment"]["STOCKCAST_HOST"] == "0.0.0.0"
    assert "/health" in " ".join(api["healthcheck"]["test"])
    assert set(compose["volumes"]) == {volume.split(":")[0] for volume in api["volumes"]}


def test_compose_is_not_open_and_holds_no_key() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    environment = compose["services"]["api"]["environment"]
    # Bound to every interface, so the first start creates keys (printed once) instead of serving everyone.
    assert environment["STOCKCAST_CREATE_KEYS_ON_FIRST_START"] == "true"
    assert "STOCKCAST_ALLOW_ANONYMOUS" not in environment and "STOCKCAST_ALLOW_ANONYMOUS" not in dockerfile_env()
    for text in ((ROOT / "docker-compose.yml").read_text(), (ROOT / "Dockerfile").read_text()):
        assert "sc_" not in text and "api_keys" not in text.lower()


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose (Debian package) not installed")
def test_compose_file_validates_offline() -> None:
    result = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.e2e
@pytest.mark.tf
def test_container_command_bootstraps_and_serves(tmp_path: Path) -> None:
    """`python -m app` with the image's environment: trains the sample model, then /predict answers."""
    port = free_port()
    env = {
        **os.environ,
        **dockerfile_env(),
        "STOCKCAST_HOST": "127.0.0.1",
        "STOCKCAST_PORT": str(port),
        "STOCKCAST_MODELS_DIR": str(tmp_path / "models"),
        "STOCKCAST_DATA_DIR": str(tmp_path / "var"),
        "STOCKCAST_SAMPLE_DATA": str(ROOT / "data" / "sample" / "msft.csv"),
        "STOCKCAST_BOOTSTRAP_EPOCHS": "1",
        # The container's command is the point here, not the backtest (tests/training covers it).
        "STOCKCAST_BOOTSTRAP_BACKTEST_FOLDS": "0",
    }
    log = tmp_path / "server.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "app"], cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    http = polling_client()

    def ready() -> bool:
        if process.poll() is not None:
            pytest.fail(f"`python -m app` exited with {process.returncode}: {log.read_text()[-3000:]}")
        try:
            return http.get(url + "/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, "the bootstrapped service", timeout=300)
        assert (tmp_path / "models" / "msft" / "1" / "model.keras").is_file()
        assert "epoch 1/1" in log.read_text()  # the progress bar was shown while it trained
        import csv

        with open(ROOT / "data" / "sample" / "msft.csv") as handle:
            rows = list(csv.DictReader(handle))[-40:]
        window = [[float(row[c]) for c in ("Open", "High", "Low", "Close", "Volume")] for row in rows]
        response = http.post(url + "/predict", json={"model": "msft", "window": window}, timeout=30)
        assert response.status_code == 200, response.text
        assert response.json()["version"] == 1
        # The bootstrapped version was exported at training time: its network runs on ONNX Runtime, and
        # neither process maps TensorFlow (the training child did).
        ready = http.get(url + "/ready", timeout=5).json()
        inference_pid = ready["inference_process"]["pid"]
        assert ready["engines"] == {"msft": "onnx"}
        assert (tmp_path / "models" / "msft" / "1" / "model.onnx").is_file()
        assert "onnxruntime" in Path(f"/proc/{inference_pid}/maps").read_text()
        assert "libtensorflow" not in Path(f"/proc/{inference_pid}/maps").read_text()
        assert "libtensorflow" not in Path(f"/proc/{process.pid}/maps").read_text()
    finally:
        process.terminate()
        process.wait(timeout=30)
    # A clean stop takes the inference process with it.
    assert not Path(f"/proc/{inference_pid}").exists()
