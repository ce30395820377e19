"""The client as a trading back end installs it: its own distribution (`client/`), httpx alone, no service code.

`bench/client.py` reports its import time beside httpx's.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

CLIENT_DISTRIBUTION = ROOT / "client"
# What the service needs and the client must never pull in: by distribution, and by module.
SERVICE_DISTRIBUTIONS = {"stockcast", "tensorflow", "tensorflow-cpu", "keras", "fastapi", "uvicorn", "pydantic"}
SERVICE_MODULES = {"tensorflow", "keras", "fastapi", "starlette", "uvicorn", "pydantic", "app", "training", "sklearn"}
OPTIONAL_MODULES = {"numpy", "pandas"}
LIST_MODULES = """
import json, sys, stockcast_client
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""
LIST_DISTRIBUTIONS = """
import importlib.metadata, json
print(json.dumps(sorted(found.metadata["Name"].lower() for found in importlib.metadata.distributions())))
"""


def output_of(python: Path | str, code: str) -> object:
    """What a snippet prints (JSON) in a fresh interpreter, without this checkout on its path."""
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    answer = subprocess.run(
        [str(python), "-c", code], env=env, cwd="/", capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(answer.stdout)


def test_importing_the_client_loads_nothing_of_the_service_nor_pandas() -> None:
    loaded = set(output_of(sys.executable, LIST_MODULES))  # type: ignore[arg-type]

    assert "httpx" in loaded
    assert not loaded & (SERVICE_MODULES | OPTIONAL_MODULES)


@pytest.mark.e2e
def test_the_client_installs_into_a_fresh_virtualenv_with_httpx_alone(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    python = venv / "bin" / "python"
    # uv where scripts/setup installed it (a couple of seconds with its cache), else venv and pip.
    if importlib.util.find_spec("uv") is not None:
        subprocess.run([sys.executable, "-m", "uv", "venv", "-q", "--python", sys.executable, str(venv)], check=True)
        install = [sys.executable, "-m", "uv", "pip", "install", "-q", "--python", str(python)]
    else:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        install = [str(python), "-m", "pip", "install", "-q"]
    # A copy: building the wheel writes a build folder beside the sources.
    source = shutil.copytree(
        CLIENT_DISTRIBUTION, tmp_path / "client", ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    )
    subprocess.run([*install, str(source)], check=True, timeout=600)

    installed = set(output_of(python, LIST_DISTRIBUTIONS))  # type: ignore[arg-type]
    loaded = set(output_of(python, LIST_MODULES))  # type: ignore[arg-type]

    assert {"stockcast-client", "httpx"} <= installed
    assert not installed & (SERVICE_DISTRIBUTIONS | OPTIONAL_MODULES)
    assert not loaded & (SERVICE_MODULES | OPTIONAL_MODULES)
