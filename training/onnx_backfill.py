"""`model.onnx` for versions trained before training wrote one, without retraining them (`python -m app export-onnx`).

The stored Keras network is exported and checked as training does
(`training.onnx_export.export_checked`). The windows it is checked on are
the version's own data when its CSV is still where `metadata["data"]["path"]`
says (the rows it was trained on, the newest ones: where its calibration and
test windows were), else seeded random windows in the network's scaled
input space; `checked_on` says which. The file lands first and the metadata
naming it second, each by an atomic rename, so a reader sees either the old
version or the new one whole; the file's sha256 joins the version's hashed
`files`. A running service picks the export up when it next loads the
version (a restart, or a new default version).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from training import features
from training.artifact import LoadedVersion, checked_onnx_path, load_version
from training.errors import BrokenVersionError
from training.files import write_json_atomic
from training.onnx_export import ONNX_FILE, export_checked
from training.spec import DATE_COLUMN
from training.store import METADATA_FILE, ModelStore

logger = logging.getLogger("stockcast.training")

# The newest windows of the version's data that the export is checked on: about what
# calibration and test hold for a few years of daily rows.
CHECK_WINDOWS = 512


def check_windows(loaded: LoadedVersion, count: int = CHECK_WINDOWS) -> tuple[np.ndarray, str]:
    """Scaled windows to check an export of `loaded` on, and what they are."""
    spec, data = loaded.spec, loaded.metadata.get("data") or {}
    path = Path(str(data.get("path") or ""))
    if data.get("path") and path.is_file():
        from training.data import load_prices

        try:
            frame = load_prices(path).frame
            if data.get("end"):
                frame = frame[frame[DATE_COLUMN] <= pd.Timestamp(str(data["end"]))]
            values = frame[list(spec.features)].to_numpy(dtype=np.float64)
            inputs, _ = features.make_windows(values, spec)
        except Exception as error:  # a CSV changed beyond reading: fall back, and say so
            logger.warning("%s: its data cannot be windowed (%s); checking on random windows", path, error)
        else:
            if len(inputs):
                inputs = np.ascontiguousarray(inputs[-count:])
                return features.scale_inputs(inputs, spec, loaded.scaler), f"{len(inputs)} newest windows of {path}"
    shape = (count, spec.window, len(spec.features))
    scaled = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    return scaled, f"{count} seeded standard-normal windows in the scaled input space (the data is not at hand)"


def export_stored_version(store: ModelStore, name: str, version: int, force: bool = False) -> dict[str, Any]:
    """Export and check one stored version's network; what happened, as a JSON-ready line."""
    metadata = store.read_metadata(name, version)
    if not force:
        with contextlib.suppress(BrokenVersionError):
            if checked_onnx_path(store, name, version, metadata) is not None:
                return {"model": name, "version": version, "done": "kept: it already has a checked model.onnx"}
    loaded = load_version(store, name, version)
    scaled, checked_on = check_windows(loaded)
    folder = store.version_dir(name, version)
    scratch = folder / f".tmp-onnx-{uuid.uuid4().hex}"
    scratch.mkdir()
    try:
        block = export_checked(loaded.model, scratch, scaled, loaded.spec.window, len(loaded.spec.features))
        block["checked_on"] = checked_on
        # Under the model's lock: two runs of this command must not interleave their metadata writes.
        with store.alias_lock(name):
            current = store.read_metadata(name, version)
            files = {key: value for key, value in current["files"].items() if key != ONNX_FILE}
            if block["ok"]:
                os.replace(scratch / ONNX_FILE, folder / ONNX_FILE)
                files[ONNX_FILE] = block["sha256"]
            write_json_atomic(folder / METADATA_FILE, {**current, "onnx": block, "files": files})
            if not block["ok"]:
                # A stale export of an earlier run is no longer named by the metadata: not left to mislead.
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(folder / ONNX_FILE)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    summary = {key: block.get(key) for key in ("ok", "max_rel_diff", "unrolled", "reason", "checked_on")}
    return {"model": name, "version": version, "done": "exported" if block["ok"] else "not exported", **summary}


def export_stored(
    store: ModelStore, name: str | None = None, version: int | None = None, force: bool = False
) -> list[dict[str, Any]]:
    """Export every version of every model (or of `name`, or one `version`); one summary line each."""
    names = [name] if name is not None else store.model_names()
    results = []
    for model in names:
        versions = [version] if version is not None else store.versions(model)
        if version is None and not versions:
            store.resolve(model)  # raises NotFoundError naming the models there are
        for number in versions:
            try:
                results.append(export_stored_version(store, model, number, force))
            except BrokenVersionError as error:
                results.append({"model": model, "version": number, "done": "not exported", "reason": str(error)})
    return results
