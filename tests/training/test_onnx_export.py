"""The ONNX export answers what Keras answers, on the real windows a version is checked on, or is not kept."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import WINDOW, tiny_clean, tiny_config
from training import features
from training.artifact import checked_onnx_path
from training.errors import BrokenVersionError
from training.files import sha256_of
from training.fitting import PreparedData, prepare
from training.models import build_model
from training.onnx_export import ONNX_FILE, PARITY_TOLERANCE, export_checked, max_relative_difference
from training.store import ModelStore

pytestmark = pytest.mark.tf


def prepared_windows(horizon: int) -> PreparedData:
    """The tiny sample split as training splits it: real calibration and test windows and their scaler."""
    config = tiny_config(horizon=horizon)
    return prepare(tiny_clean().frame, config.window_spec(), config.validation_fraction, config.test_fraction)


def check_windows(prepared: PreparedData) -> np.ndarray:
    """The calibration and test windows, scaled as the served network sees them (what training checks on)."""
    raw = np.concatenate([prepared.parts[part][0] for part in ("calibration", "test")])
    return features.scale_inputs(raw, prepared.spec, prepared.scaler)


# Untrained but built networks: the export maps weights, not what training made of them;
# the seed makes their outputs differ from zero by the usual initialisation spread.
@pytest.mark.parametrize("horizon", [1, 5])
@pytest.mark.parametrize("layer_count", [1, 2])
@pytest.mark.parametrize("architecture", ["simple_rnn", "lstm", "gru"])
def test_export_matches_keras_on_real_windows(
    architecture: str, layer_count: int, horizon: int, tmp_path: Path
) -> None:
    prepared = prepared_windows(horizon)
    windows = check_windows(prepared)
    model = build_model(architecture, WINDOW, len(prepared.spec.features), horizon, units=8, layer_count=layer_count)
    block = export_checked(model, tmp_path, windows, WINDOW, len(prepared.spec.features))
    assert block["ok"], block
    assert block["max_rel_diff"] <= PARITY_TOLERANCE == block["tolerance"]
    assert block["windows_checked"] == len(windows) > 0
    assert block["unrolled"] is (architecture != "lstm")
    assert set(block["converters"]) == {"tf2onnx", "onnx", "onnxruntime"}
    assert (tmp_path / ONNX_FILE).is_file()


def test_an_export_over_the_tolerance_is_removed_and_says_why(tmp_path: Path) -> None:
    prepared = prepared_windows(1)
    model = build_model("lstm", WINDOW, len(prepared.spec.features), 1, units=4)
    block = export_checked(model, tmp_path, check_windows(prepared), WINDOW, 5, tolerance=0.0)
    if block["max_rel_diff"] == 0.0:
        pytest.skip("ONNX Runtime matched Keras bit for bit; no tolerance can be missed")
    assert not block["ok"]
    assert "over the tolerance 0" in block["reason"]
    assert not (tmp_path / ONNX_FILE).exists()


def test_a_failed_export_is_recorded_not_raised(tmp_path: Path) -> None:
    prepared = prepared_windows(1)
    model = build_model("gru", WINDOW, len(prepared.spec.features), 1, units=4)
    # A window length the network was not built for: the conversion itself fails.
    block = export_checked(model, tmp_path, check_windows(prepared), WINDOW + 1, 5)
    assert not block["ok"]
    assert block["reason"].startswith("export failed:")
    assert not (tmp_path / ONNX_FILE).exists()


def test_relative_difference_is_to_the_largest_output() -> None:
    expected = np.array([[1e-7, 2.0], [-4.0, 0.0]])
    got = expected + np.array([[1e-6, 0.0], [0.0, -2e-6]])
    assert max_relative_difference(got, expected) == pytest.approx(2e-6 / 4.0)
    with pytest.raises(ValueError, match="shape"):
        max_relative_difference(got[:1], expected)


def test_training_stores_a_checked_export_among_the_hashed_files(model_store: ModelStore) -> None:
    metadata = model_store.read_metadata("tiny-h5", 1)
    block = metadata["onnx"]
    assert block["ok"] and block["file"] == ONNX_FILE and block["max_rel_diff"] <= PARITY_TOLERANCE
    path = checked_onnx_path(model_store, "tiny-h5", 1, metadata)
    assert path == model_store.version_dir("tiny-h5", 1) / ONNX_FILE
    assert metadata["files"][ONNX_FILE] == block["sha256"] == sha256_of(path)


def test_an_altered_export_is_refused_and_a_missing_check_means_none(model_store: ModelStore, tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    shutil.copytree(model_store.version_dir("tiny", 1), store.version_dir("tiny", 1))
    metadata = store.read_metadata("tiny", 1)
    with open(store.version_dir("tiny", 1) / ONNX_FILE, "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(BrokenVersionError, match=r"model\.onnx does not match its sha256"):
        checked_onnx_path(store, "tiny", 1, metadata)
    (store.version_dir("tiny", 1) / ONNX_FILE).unlink()
    with pytest.raises(BrokenVersionError, match=r"model\.onnx is missing"):
        checked_onnx_path(store, "tiny", 1, metadata)
    assert checked_onnx_path(store, "tiny", 1, {**metadata, "onnx": {"ok": False, "reason": "r"}}) is None
    assert checked_onnx_path(store, "tiny", 1, {key: value for key, value in metadata.items() if key != "onnx"}) is None
