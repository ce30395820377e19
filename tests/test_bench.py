"""The benchmarks still start and still reach what they time, without running one.

A rename in `app/` that a bench patches by dotted name would otherwise go
unnoticed until someone runs the bench. None of these tests imports
TensorFlow.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPOSITORY = Path(__file__).resolve().parent.parent
BENCH = REPOSITORY / "bench"
# The scripts a user runs; `harness.py` and `bench_model.py` are what they share.
SHARED = {"harness.py", "bench_model.py"}
SCRIPTS = sorted(path.name for path in BENCH.glob("*.py") if path.name not in SHARED)
# A server that bench/serve.py starts, not a benchmark: it measures nothing itself.
SERVERS = {"reference_servers.py"}


def load_bench_module(name: str) -> ModuleType:
    """Import bench/<name>.py under a private name, without running its main."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_request_steps_patches_names_that_exist() -> None:
    request_steps = load_bench_module("request_steps")
    assert request_steps.STEPS
    for label, where, attribute in request_steps.STEPS:
        module_name, _, owner_name = where.partition(":")
        owner = importlib.import_module(module_name)
        if owner_name:
            assert hasattr(owner, owner_name), f"{label}: {module_name} has no {owner_name}"
            owner = getattr(owner, owner_name)
        assert callable(getattr(owner, attribute, None)), f"{label}: {where} has no callable {attribute}"


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_bench_script_starts_and_offers_json(script: str) -> None:
    answer = subprocess.run(
        [sys.executable, str(BENCH / script), "--help"],
        cwd=REPOSITORY,
        env={"PYTHONPATH": str(REPOSITORY), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.startswith("usage:")
    if script not in SERVERS:
        assert "--json OUT" in answer.stdout


def test_every_bench_script_is_in_the_index() -> None:
    index = (BENCH / "README.md").read_text()
    for script in SCRIPTS:
        assert f"`{script}`" in index, f"bench/README.md does not list {script}"


def test_write_json_writes_the_command_and_the_figures(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    harness = importlib.import_module("harness")
    measured = harness.Measurement("service", 32, 1000, 2.0, 1.0, 2.0, 3.0, 4.0, 0, server_cpu_seconds=0.5)
    out = tmp_path / "figures" / "serve.json"

    harness.write_json(out, ["bench/serve.py", "--rounds", "7"], {"measurements": [measured]})

    written = json.loads(out.read_text())
    assert written["command"] == "bench/serve.py --rounds 7"
    assert written["measurements"][0]["server"] == "service"
    assert written["measurements"][0]["throughput"] == 500.0
    assert written["measurements"][0]["cpu_per_request_us"] == 500.0
    harness.write_json(None, ["bench/serve.py"], {})
