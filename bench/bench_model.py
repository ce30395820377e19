"""The model every serving benchmark uses: a 64-unit LSTM on a 40-day window of the sample.

Shared by `bench/inference.py` and `bench/serve.py`. A store given with
`--models-dir` is used as it is; otherwise a version is trained for a couple
of epochs into a temporary store (the speed of a forward pass does not
depend on how well the weights were trained).
"""

from __future__ import annotations

import os
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
SAMPLE = REPOSITORY / "data" / "sample" / "msft.csv"
MODEL_NAME = "msft"
UNITS = 64
WINDOW = 40
EPOCHS = 2


def train_benchmark_model(store_root: Path, name: str = MODEL_NAME, epochs: int = EPOCHS) -> int:
    """Train the benchmark LSTM on the bundled sample into `store_root`; returns its version."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from training.config import TrainConfig
    from training.data import load_prices
    from training.fitting import TrainingRun, train_version
    from training.store import ModelStore

    clean = load_prices(SAMPLE)
    config = TrainConfig(architecture="lstm", units=UNITS, window=WINDOW, epochs=epochs, patience=epochs)
    source = {"name": SAMPLE.name, "path": str(SAMPLE)}
    outcome = train_version(TrainingRun(name, clean, source, config), ModelStore(store_root))
    return outcome.version


def sample_windows(window: int, feature_names: tuple[str, ...], count: int) -> list[list[list[float]]]:
    """The last `count` windows of the sample as nested lists, the way a client sends them."""
    from training.data import load_prices

    values = load_prices(SAMPLE).frame[list(feature_names)].to_numpy(dtype=float)
    return [values[end - window : end].tolist() for end in range(len(values) - count + 1, len(values) + 1)]
