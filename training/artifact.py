"""Loading a stored version back into something that forecasts in price units.

See docs/design.md, "Store format (`metadata.json`, format version 1)".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training import features
from training.errors import BrokenVersionError
from training.features import Scaler
from training.files import sha256_of
from training.onnx_export import ONNX_FILE
from training.spec import WindowSpec
from training.store import ModelStore


@dataclass
class LoadedVersion:
    """A checked version: its metadata, Keras model, window spec and scaler."""

    metadata: dict[str, Any]
    model: Any
    spec: WindowSpec
    scaler: Scaler

    @property
    def name(self) -> str:
        """Model name."""
        return str(self.metadata["name"])

    @property
    def version(self) -> int:
        """Version number."""
        return int(self.metadata["version"])

    def predict_prices(self, inputs: np.ndarray) -> np.ndarray:
        """Raw windows (n, window, features) to forecasts (n, horizon) in price units."""
        from training.models import predict_outputs

        scaled = features.scale_inputs(inputs, self.spec, self.scaler)
        outputs = predict_outputs(self.model, scaled)
        return features.outputs_to_prices(inputs, outputs, self.spec, self.scaler)


def spec_from_metadata(metadata: dict[str, Any]) -> WindowSpec:
    """The window spec a version was trained with."""
    return WindowSpec(
        features=tuple(metadata["features"]),
        label=metadata["label"],
        window=int(metadata["window"]),
        horizon=int(metadata["horizon"]),
        transform=metadata["transform"],
    )


def load_preprocessing(store: ModelStore, name: str, version: int) -> tuple[dict[str, Any], WindowSpec, Scaler]:
    """A version's metadata, window spec and scaler, checked against each other; no Keras needed.

    The API process uses this alone: the network itself is loaded by the
    inference process (`load_version`).
    """
    metadata = store.read_metadata(name, version)
    try:
        spec = spec_from_metadata(metadata)
        scaler = Scaler.from_json(metadata["scaler"])
    except (KeyError, TypeError, ValueError) as error:
        raise BrokenVersionError(f"{name} v{version}: invalid preprocessing metadata: {error}") from error
    if scaler.feature_center.shape != (len(spec.features),) or scaler.target_center.shape != (spec.horizon,):
        raise BrokenVersionError(f"{name} v{version}: scaler shapes do not match features/horizon")
    return metadata, spec, scaler


def checked_onnx_path(store: ModelStore, name: str, version: int, metadata: dict[str, Any]) -> Path | None:
    """The version's `model.onnx` when its export passed the parity check and the file matches its sha256.

    None when the version has no checked export (trained before exports, or
    the export failed or missed the tolerance: `metadata["onnx"]["reason"]`).
    A checked export whose file is missing or altered raises
    BrokenVersionError: that is damage, not an older version.
    """
    block = metadata.get("onnx")
    if not isinstance(block, dict) or block.get("ok") is not True:
        return None
    path = store.version_dir(name, version) / ONNX_FILE
    if not path.is_file():
        raise BrokenVersionError(f"{name} v{version}: {ONNX_FILE} is missing")
    if metadata["files"].get(ONNX_FILE) != sha256_of(path):
        raise BrokenVersionError(f"{name} v{version}: {ONNX_FILE} does not match its sha256 in metadata")
    return path


def load_version(store: ModelStore, name: str, version: int) -> LoadedVersion:
    """Load and check a version; a broken one raises BrokenVersionError with the reason.

    `safe_mode=True` makes Keras refuse serialized Python code (lambdas), so
    loading a model file never executes code from it.
    """
    import keras

    metadata, spec, scaler = load_preprocessing(store, name, version)
    path = store.verified_model_path(name, version, metadata)
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as error:
        raise BrokenVersionError(f"{name} v{version}: model.keras cannot be loaded: {error}") from error
    expected = (None, spec.window, len(spec.features))
    if tuple(model.input_shape) != expected or tuple(model.output_shape) != (None, spec.horizon):
        raise BrokenVersionError(
            f"{name} v{version}: model shapes {model.input_shape} -> {model.output_shape} "
            f"do not match metadata {expected} -> (None, {spec.horizon})"
        )
    return LoadedVersion(metadata=metadata, model=model, spec=spec, scaler=scaler)
