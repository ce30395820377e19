"""Does a serve-only install (no `train` extra: no TensorFlow) run the service and answer /predict, and how big is it?

    .venv/bin/python bench/serve_only.py [--models-dir DIR] [--keep DIR] [--json OUT]

1. Installs this checkout into two fresh virtualenvs with the same command
   (`uv pip install --compile-bytecode`, pip's default of compiling
   bytecode, as the Dockerfile's pip does): `.` (what the Dockerfile's
   `serve` target installs) and `.[train]` (the `train` target), and
   reports each one's size on disk (`du`), and their ratio.
2. In the serve-only one, checks that TensorFlow and Keras cannot be
   imported at all.
3. Starts `python -m app` from the serve-only virtualenv on a store holding
   the benchmark model (trained here, with this virtualenv's TensorFlow,
   unless `--models-dir` names a store with `msft`), waits for /ready,
   POSTs one window to /predict and checks the forecast is finite and that
   /models names the engine `onnx`. Exits 1 if any check fails.

Needs PyPI (or uv's cache) for the two installs.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_model import MODEL_NAME, REPOSITORY, sample_windows, train_benchmark_model
from harness import add_json_option, http, memory_mib, service_server, serving_processes, write_json


def install(target: Path, requirement: str) -> float:
    """A fresh virtualenv at `target` with `requirement` installed; its size on disk in MiB."""
    uv = [sys.executable, "-m", "uv"]
    subprocess.run([*uv, "venv", "--quiet", "--python", sys.executable, str(target)], check=True)
    python = str(target / "bin" / "python")
    subprocess.run(
        [*uv, "pip", "install", "--quiet", "--compile-bytecode", "--python", python, requirement], check=True
    )
    completed = subprocess.run(["du", "-sk", str(target)], check=True, capture_output=True, text=True)
    return int(completed.stdout.split()[0]) / 1024


def importable(python: Path, module: str) -> bool:
    """Whether `module` can be found by `python` (without importing it)."""
    code = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    return subprocess.run([str(python), "-c", code]).returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, help=f"store with model '{MODEL_NAME}' (default: train one)")
    parser.add_argument("--keep", type=Path, help="build the virtualenvs here and keep them (default: a temp folder)")
    add_json_option(parser)
    arguments = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="stockcast-serve-only-"))
    venvs = arguments.keep or folder
    failures: list[str] = []
    try:
        sizes = {}
        for name, requirement in (("serve", str(REPOSITORY)), ("train", f"{REPOSITORY}[train]")):
            shutil.rmtree(venvs / name, ignore_errors=True)
            sizes[name] = install(venvs / name, requirement)
            print(f"{name:5s} install ({requirement}): {sizes[name]:.0f} MiB")
        print(f"train / serve: {sizes['train'] / sizes['serve']:.1f}x")
        serve_python = venvs / "serve" / "bin" / "python"
        found = {module: importable(serve_python, module) for module in ("tensorflow", "keras", "onnxruntime")}
        print(f"serve-only install can import: {found}")
        if found["tensorflow"] or found["keras"] or not found["onnxruntime"]:
            failures.append(f"the serve-only install's modules are not as intended: {found}")

        store = folder / "models"
        if arguments.models_dir is None:
            train_benchmark_model(store)
        else:
            shutil.copytree(arguments.models_dir, store)
        metadata = json.loads(next((store / MODEL_NAME).glob("*/metadata.json")).read_text())
        window = sample_windows(int(metadata["window"]), tuple(metadata["features"]), 1)[0]
        server = service_server("serve-only", store, folder, python=str(serve_python))
        # Only the serve-only virtualenv's packages: nothing from this checkout's .venv.
        server.env["PYTHONNOUSERSITE"] = "1"
        server.start(timeout=120)
        try:
            status, answer = http("POST", server.url + "/predict", {"model": MODEL_NAME, "window": window})
            forecast = answer["forecast"][0]["close"] if status == 200 else None
            engine = http("GET", server.url + f"/models/{MODEL_NAME}")[1]["serving"]["engine"]
            resident = [memory_mib(pid)[0] for pid in serving_processes(server.pid)]
        finally:
            server.stop()
        print(
            f"serve-only service: ready in {server.ready_seconds:.1f} s; /predict {status}, close {forecast};"
            f" engine {engine}; RSS " + " + ".join(f"{size:.0f}" for size in resident) + " MiB (API + inference)"
        )
        if status != 200 or not isinstance(forecast, float) or not math.isfinite(forecast):
            failures.append(f"/predict answered {status}: {str(answer)[:300]}")
        if engine != "onnx":
            failures.append(f"the version was served by {engine}, not onnx")
        write_json(
            arguments.json,
            sys.argv,
            {
                "install_mib": sizes,
                "imports": found,
                "ready_seconds": server.ready_seconds,
                "predict_status": status,
                "engine": engine,
                "rss_mib": resident,
                "failures": failures,
            },
        )
    finally:
        if arguments.keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    if failures:
        sys.exit("FAILED: " + "; ".join(failures))
    print("serve-only install: OK")


if __name__ == "__main__":
    main()
