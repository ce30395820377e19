"""`python -m app export-onnx [NAME [VERSION]]`: versions trained without model.onnx get a checked one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from app.__main__ import export_onnx_command, parse_arguments
from app.core.config import Settings
from tests.helpers import strip_onnx_export
from training.artifact import checked_onnx_path
from training.files import sha256_of
from training.onnx_export import ONNX_FILE, PARITY_TOLERANCE
from training.store import MODEL_FILE, ModelStore

pytestmark = pytest.mark.tf


def test_an_old_version_gets_a_checked_export_and_a_consistent_hash_list(
    model_store: ModelStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = ModelStore(tmp_path / "models")
    shutil.copytree(model_store.folder("tiny"), store.folder("tiny"))
    strip_onnx_export(store.version_dir("tiny", 2))
    before = store.read_metadata("tiny", 2)
    settings = Settings(models_dir=store.root, data_dir=tmp_path / "var")

    assert export_onnx_command(settings, parse_arguments(["export-onnx", "tiny"])) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(line["version"], line["done"]) for line in lines] == [
        (1, "kept: it already has a checked model.onnx"),
        (2, "exported"),
    ]
    # The version's own CSV was still there, so it was checked on its real windows.
    assert lines[1]["checked_on"].endswith(f"windows of {before['data']['path']}")
    after = store.read_metadata("tiny", 2)
    assert after["onnx"]["ok"] and after["onnx"]["max_rel_diff"] <= PARITY_TOLERANCE
    assert after["files"] == {**before["files"], ONNX_FILE: sha256_of(store.version_dir("tiny", 2) / ONNX_FILE)}
    assert after["files"][MODEL_FILE] == sha256_of(store.version_dir("tiny", 2) / MODEL_FILE)
    assert checked_onnx_path(store, "tiny", 2, after) is not None
    assert {key: value for key, value in after.items() if key not in ("onnx", "files")} == {
        key: value for key, value in before.items() if key != "files"
    }
    assert not list(store.version_dir("tiny", 2).glob(".tmp-*"))


def test_unknown_models_and_versions_exit_2_with_the_reason(
    model_store: ModelStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(models_dir=model_store.root, data_dir=tmp_path / "var")
    assert export_onnx_command(settings, parse_arguments(["export-onnx", "nope"])) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err
    assert export_onnx_command(settings, parse_arguments(["export-onnx", "tiny", "9"])) == 2
    assert "model 'tiny' has no version 9" in capsys.readouterr().err


def test_an_object_store_is_refused_with_the_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings(models_dir=tmp_path / "cache", data_dir=tmp_path / "var", store_url="s3://bucket/prefix")
    assert export_onnx_command(settings, parse_arguments(["export-onnx"])) == 2
    assert "export-onnx works on a folder store" in capsys.readouterr().err
