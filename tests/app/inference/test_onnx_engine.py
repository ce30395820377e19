"""ONNX Runtime serves what TensorFlow serves, and an inference process of ONNX versions holds no TensorFlow.

Real tiny versions (their `model.onnx` written and checked by training), a
real spawned inference process, its memory map read from /proc.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from app.inference.client import InferenceProcess
from app.inference.engine import CompiledModel
from app.inference.onnx_engine import OnnxModel
from tests.helpers import real_windows, run, strip_onnx_export
from training.artifact import checked_onnx_path, load_preprocessing, load_version
from training.errors import BrokenVersionError
from training.store import ModelStore

pytestmark = pytest.mark.tf

# Shared libraries that only an import of TensorFlow (or Keras on its TensorFlow backend) maps.
TENSORFLOW_LIBRARIES = ("libtensorflow", "_pywrap_tensorflow", "tensorflow/python")


def onnx_model(store: ModelStore, name: str, max_batch_size: int) -> OnnxModel:
    metadata, spec, scaler = load_preprocessing(store, name, 1)
    path = checked_onnx_path(store, name, 1, metadata)
    assert path is not None
    return OnnxModel(metadata, spec, scaler, path, max_batch_size)


@pytest.mark.parametrize("name", ["tiny", "tiny-h5"])
def test_forecasts_and_bounds_equal_the_tensorflow_engine_s(model_store: ModelStore, name: str) -> None:
    served = onnx_model(model_store, name, max_batch_size=16)
    graph = CompiledModel(load_version(model_store, name, 1), max_batch_size=16, jit_compile=False)
    assert (served.engine, graph.engine) == ("onnx", "tensorflow")
    for count in (1, 5, 37):  # 37: three chunks of at most 16
        windows = real_windows(served.spec, count)
        np.testing.assert_allclose(served.forecast(windows), graph.forecast(windows), rtol=1e-5)


def without_export(source: Path, target: Path) -> None:
    """A copy of a version as trained before ONNX exports."""
    shutil.copytree(source, target)
    strip_onnx_export(target)


def mapped_files(pid: int) -> set[str]:
    """The files a process has mapped: its shared libraries among them."""
    lines = Path(f"/proc/{pid}/maps").read_text().splitlines()
    return {line.split(maxsplit=5)[5] for line in lines if len(line.split(maxsplit=5)) == 6}


def test_an_inference_process_of_onnx_versions_never_maps_tensorflow(model_store: ModelStore, tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    shutil.copytree(model_store.root, store.root)
    without_export(store.version_dir("tiny", 2), tmp_path / "old")
    windows = real_windows(load_preprocessing(store, "tiny", 1)[1], 3)

    async def scenario() -> tuple[list[str | None], set[str], str | None, set[str]]:
        process = InferenceProcess(store.root, xla=False)
        await process.start()
        try:
            handles = [await process.load(name, 1, max_batch_size=8) for name in ("tiny", "tiny-h5")]
            handles.append(await process.load("tiny", 2, max_batch_size=8))
            for handle in handles:
                assert (await process.predict(handle, windows)).shape[0] == 3
            engines = [process.engine(handle) for handle in handles]
            assert process.pid is not None
            onnx_only = mapped_files(process.pid)
            # A version trained before exports is served too, by TensorFlow, in the same process.
            shutil.rmtree(store.version_dir("tiny", 2))
            shutil.copytree(tmp_path / "old", store.version_dir("tiny", 2))
            old = await process.load("tiny", 2, max_batch_size=8)
            await process.predict(old, windows)
            assert process.pid is not None
            return engines, onnx_only, process.engine(old), mapped_files(process.pid)
        finally:
            await process.stop()

    engines, onnx_only, old_engine, with_old = run(scenario())
    assert engines == ["onnx", "onnx", "onnx"]
    assert any("onnxruntime" in path for path in onnx_only)  # the map is read, and holds what serves
    assert [path for path in onnx_only if any(part in path for part in TENSORFLOW_LIBRARIES)] == []
    assert old_engine == "tensorflow"
    assert any("libtensorflow" in path for path in with_old)  # the check above would have seen it


def test_the_engine_setting_onnx_refuses_a_version_without_export_and_tensorflow_ignores_exports(
    model_store: ModelStore, tmp_path: Path
) -> None:
    without_export(model_store.version_dir("tiny", 1), tmp_path / "tiny" / "1")
    shutil.copytree(model_store.version_dir("tiny", 2), tmp_path / "tiny" / "2")

    async def scenario() -> tuple[str, str | None]:
        only_onnx = InferenceProcess(tmp_path, xla=False, engine="onnx")
        await only_onnx.start()
        try:
            with pytest.raises(BrokenVersionError) as refused:
                await only_onnx.load("tiny", 1, max_batch_size=4)
        finally:
            await only_onnx.stop()
        only_tensorflow = InferenceProcess(tmp_path, xla=False, engine="tensorflow")
        await only_tensorflow.start()
        try:
            engine = only_tensorflow.engine(await only_tensorflow.load("tiny", 2, max_batch_size=4))
        finally:
            await only_tensorflow.stop()
        return str(refused.value), engine

    reason, engine = run(scenario())
    assert reason == (
        "tiny v1 has no checked model.onnx (trained before ONNX exports); inference_engine=onnx serves nothing else"
    )
    assert engine == "tensorflow"


def test_a_version_whose_keras_file_is_damaged_is_refused_though_onnx_would_serve_it(
    model_store: ModelStore, tmp_path: Path
) -> None:
    shutil.copytree(model_store.version_dir("tiny", 1), tmp_path / "tiny" / "1")
    (tmp_path / "tiny" / "1" / "model.keras").write_bytes(b"not a keras file")

    async def scenario() -> str:
        process = InferenceProcess(tmp_path, xla=False)
        await process.start()
        try:
            with pytest.raises(BrokenVersionError) as refused:
                await process.load("tiny", 1, max_batch_size=4)
        finally:
            await process.stop()
        return str(refused.value)

    assert run(scenario()) == "tiny v1: model.keras does not match its sha256 in metadata"


def test_a_graph_that_takes_other_windows_is_refused_at_load(model_store: ModelStore) -> None:
    metadata, spec, scaler = load_preprocessing(model_store, "tiny-h5", 1)
    path = checked_onnx_path(model_store, "tiny", 1, model_store.read_metadata("tiny", 1))
    assert path is not None
    # tiny's graph answers one step; tiny-h5's metadata expects five.
    with pytest.raises(BrokenVersionError, match="warm-up forecast has shape"):
        OnnxModel(metadata, spec, scaler, path, max_batch_size=4)
