"""The version report PNG, drawn from a tiny real version."""

from __future__ import annotations

import struct
from pathlib import Path

import pandas as pd
import pytest

from training.artifact import load_version
from training.config import TrainConfig
from training.data import load_prices
from training.errors import NotFoundError
from training.fitting import TrainingRun
from training.promotion import train_and_promote
from training.store import REPORT_FILE, ModelStore
from training.version_report import forecast_test_period, render_version_report

pytestmark = pytest.mark.tf

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample" / "msft.csv"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelStore, Path, int]:
    """A one-epoch GRU with a two-fold backtest, trained on a copy of the sample's last 600 rows."""
    folder = tmp_path_factory.mktemp("charts")
    data_path = folder / "slice.csv"
    data_path.write_text("\n".join(SAMPLE.read_text().splitlines()[:1] + SAMPLE.read_text().splitlines()[-600:]))
    clean = load_prices(data_path)
    store = ModelStore(folder / "models")
    config = TrainConfig(
        architecture="gru", units=4, epochs=1, window=10, horizon=2, backtest_folds=2, backtest_stride=30
    )
    source = {"name": data_path.name, "path": str(data_path)}
    outcome, _ = train_and_promote(TrainingRun("slice", clean, source, config), store)
    return store, data_path, outcome.version


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk that every PNG starts with."""
    assert png[:8] == PNG_SIGNATURE
    assert png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    return width, height


def test_training_draws_the_report_into_the_version_folder(trained: tuple[ModelStore, Path, int]) -> None:
    store, _, version = trained
    width, height = png_size((store.version_dir("slice", version) / REPORT_FILE).read_bytes())
    assert width > 800 and height > 800
    # Beside the version's files, not among them: the hashed files are what the version is.
    assert set(store.read_metadata("slice", version)["files"]) == {"model.keras", "model.onnx"}


def test_report_is_a_png_of_a_readable_size(trained: tuple[ModelStore, Path, int]) -> None:
    store, _, version = trained
    png = render_version_report(store, "slice", version)
    width, height = png_size(png)
    assert width > 800 and height > 800
    assert len(png) > 30_000


def test_report_forecasts_cover_the_versions_test_part(trained: tuple[ModelStore, Path, int]) -> None:
    store, data_path, version = trained
    loaded = load_version(store, "slice", version)
    frame = load_prices(data_path).frame
    forecasts = forecast_test_period(loaded, frame, step=2)
    test = loaded.metadata["split"]["test"]
    assert len(forecasts.actual) == loaded.metadata["split"]["windows"]["test"]
    assert forecasts.dates[-1] == pd.Timestamp(test["end"])
    lower, upper = forecasts.bounds["95"]
    inner_lower, inner_upper = forecasts.bounds["80"]
    assert (lower <= inner_lower).all() and (inner_upper <= upper).all()
    assert (lower < forecasts.predicted).all() and (forecasts.predicted < upper).all()


def test_report_explains_that_the_training_data_is_gone(trained: tuple[ModelStore, Path, int]) -> None:
    store, data_path, version = trained
    frame = load_prices(data_path).frame
    moved = data_path.with_suffix(".moved")
    data_path.rename(moved)
    try:
        with pytest.raises(NotFoundError, match="no longer exists"):
            render_version_report(store, "slice", version)
        # A frame passed in stands in for the missing file.
        assert render_version_report(store, "slice", version, frame=frame)[:8] == PNG_SIGNATURE
    finally:
        moved.rename(data_path)


def test_report_of_an_unknown_version_is_not_found(trained: tuple[ModelStore, Path, int]) -> None:
    store, _, version = trained
    with pytest.raises(NotFoundError, match="no version"):
        render_version_report(store, "slice", version + 1)
