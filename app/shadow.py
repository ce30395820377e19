"""Running the shadow challenger after scoring: its forecasts for the champion's logged windows, in a child process.

The challenger's network needs Keras, which the API process never imports,
so the windows go to a spawned child process that loads the version and
forecasts them (as `app.reports` draws reports). Blocking: the embedded
service calls `shadow_dataset` in a thread after scoring, the queue worker
in its score task. Nothing here is on /predict's path.
See docs/ledger.md, "Shadow challenger", and `app.ledger.shadow`.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from app.core.process import die_with_parent
from app.datasets import DatasetStore
from app.ledger.records import dataset_of
from app.ledger.scoring import closes_by_column, score_dataset
from app.ledger.shadow import Forecaster, shadow_rows
from app.ledger.store import LedgerStore
from training.artifact import spec_from_metadata
from training.data import load_prices
from training.store import CHALLENGER, CHAMPION, ModelStore

logger = logging.getLogger("stockcast.shadow")

# Makes the forecaster of one version: (models folder, model, version) to a function of raw windows.
ForecasterFactory = Callable[[Path, str, int], Forecaster]


def child_forecaster(models_dir: Path, name: str, version: int) -> Forecaster:
    """Forecasts with the version in a spawned child process, one per call (TensorFlow stays out of this one)."""

    def forecast(windows: np.ndarray) -> np.ndarray:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=1, mp_context=context, initializer=die_with_parent) as pool:
            outputs: np.ndarray = pool.submit(_forecast_in_child, str(models_dir), name, version, windows).result()
        return outputs

    return forecast


def _forecast_in_child(models_dir: str, name: str, version: int, windows: np.ndarray) -> np.ndarray:
    """Runs in the child: load the version (Keras is imported here) and forecast with bands, as the server would."""
    from app.inference.steps import ForecastSteps
    from training.artifact import load_version

    loaded = load_version(ModelStore(models_dir), name, version)
    windows = np.asarray(windows, dtype=np.float64)
    steps = ForecastSteps(loaded.metadata, loaded.spec, loaded.scaler)
    return steps.with_bands(windows, loaded.predict_prices(windows))


def shadow_model(ledger: LedgerStore, models: ModelStore, frame: object, model: str, factory: ForecasterFactory) -> int:
    """Write the challenger's forecasts for `model`'s logged champion windows; how many were written."""
    aliases = models.aliases(model)
    champion, challenger = aliases.get(CHAMPION), aliases.get(CHALLENGER)
    if champion is None or challenger is None or champion == challenger:
        return 0
    metadata = models.read_metadata(model, challenger)
    replayed = {
        str(row["origin"]) for row in ledger.logged_forecasts(model, challenger) if row["served_as"] == CHALLENGER
    }
    logged = [row for row in ledger.logged_forecasts(model, champion) if row["served_as"] == CHAMPION]
    models.version_dir(model, challenger)  # the child reads the folder: with object storage, fetched here first
    rows = shadow_rows(
        metadata,
        spec_from_metadata(metadata),
        frame,  # type: ignore[arg-type]
        logged,
        replayed,
        factory(models.root, model, challenger),
    )
    if rows:
        ledger.add_forecasts(rows)
        logger.info("%s: challenger v%d forecast %d logged windows of v%d", model, challenger, len(rows), champion)
    return len(rows)


def shadow_dataset(
    ledger: LedgerStore,
    models: ModelStore,
    datasets: DatasetStore,
    dataset: str,
    factory: ForecasterFactory = child_forecaster,
) -> int:
    """For every model of `dataset` with a challenger trained on it: forecast the new logged windows, then score.

    How many challenger forecasts were written. A challenger trained on
    another dataset is skipped: its rows would not be comparable.
    """
    shadowed = [
        model
        for model in ledger.models_of(dataset)
        if (challenger := models.aliases(model).get(CHALLENGER)) is not None
        and dataset_of(models.read_metadata(model, challenger)) == dataset
    ]
    if not shadowed:
        return 0
    frame = load_prices(datasets.csv_path(dataset)).frame
    written = 0
    for model in shadowed:
        try:
            written += shadow_model(ledger, models, frame, model, factory)
        except Exception:
            # The challenger is evidence, not service: its failure leaves the scores and the answer as they are.
            logger.exception("%s: the challenger's forecasts failed; tried again after the next append", model)
    if written:
        score_dataset(ledger, dataset, closes_by_column(frame))
    return written


__all__ = ["ForecasterFactory", "child_forecaster", "shadow_dataset", "shadow_model"]
