"""The version report chart: forecast against outcome with intervals, residuals, and the backtest table.

`forecast_test_period` recomputes what a stored version forecast over its
test part (with its stored scaler and intervals, through the same functions
that serving uses); `draw_version_report` turns that and the version's
metadata into a PNG; `render_version_report` is the edge that reads the
store and the data file; `write_version_report` draws it once, at training
time, into the version's folder, where the API serves it from (a version is
immutable, and drawing needs Keras, which the API process never imports).
See docs/design.md, "Layout: which process runs what".
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from training import conformal, features
from training.baselines import BASELINES
from training.data import CleaningSettings, load_prices
from training.errors import DataError, NotFoundError
from training.files import sha256_of, write_bytes_atomic
from training.spec import DATE_COLUMN
from training.store import REPORT_FILE, ModelStore

# The bands drawn around the forecast; the table lists every stored level.
BAND_LEVELS: tuple[str, ...] = ("95", "80")
BAND_COLOURS = {"95": "#c6dbef", "80": "#6baed6"}
TABLE_ROWS: tuple[str, ...] = ("model", *BASELINES)
HISTOGRAM_BINS = 40
# The zoomed panel shows this many of the latest forecasts, where the bands are visible.
ZOOM_WINDOWS = 60
FIGURE_SIZE = (12.0, 12.0)
DPI = 100


@dataclass
class PeriodForecasts:
    """One version's forecasts over its test part, with outcomes and bounds."""

    dates: pd.DatetimeIndex
    actual: np.ndarray
    predicted: np.ndarray
    bounds: dict[str, tuple[np.ndarray, np.ndarray]]
    step: int


def _load_frame(metadata: dict[str, Any]) -> tuple[pd.DataFrame, list[str]]:
    """Re-read the version's training data from the path recorded in its metadata."""
    data = metadata.get("data", {})
    path = data.get("path")
    label = f"{metadata.get('name')} v{metadata.get('version')}"
    if not path:
        raise NotFoundError(f"{label}: its metadata records no data path, so the test period cannot be redrawn")
    if not Path(path).is_file():
        raise NotFoundError(
            f"{label}: its training data '{path}' no longer exists; restore the file to draw the report"
        )
    notes = []
    if data.get("sha256") and data["sha256"] != sha256_of(path):
        notes.append(f"note: {Path(path).name} changed since training (sha256 differs)")
    required = tuple(dict.fromkeys((*metadata["features"], metadata["label"])))
    settings = CleaningSettings(mask_outliers=bool(data.get("outliers_masked")))
    return load_prices(path, required=required, settings=settings).frame, notes


def forecast_test_period(loaded: Any, frame: pd.DataFrame, step: int = 1) -> PeriodForecasts:
    """Forecasts, outcomes and interval bounds for the `step`-ahead target of every test window.

    `loaded` is a `training.artifact.LoadedVersion`. The test part is found
    by the dates in the version's split metadata and windowed on its own, as
    in training, so these are the windows its test metrics were computed on.
    """
    metadata, spec = loaded.metadata, loaded.spec
    if not 1 <= step <= spec.horizon:
        raise ValueError(f"step must be between 1 and the horizon {spec.horizon}, got {step}")
    test = metadata["split"]["test"]
    dates = pd.to_datetime(frame[DATE_COLUMN])
    rows = frame[(dates >= pd.Timestamp(test["start"])) & (dates <= pd.Timestamp(test["end"]))]
    inputs, futures = features.make_windows(rows[list(spec.features)].to_numpy(dtype=np.float64), spec)
    if len(inputs) == 0:
        raise DataError(
            f"the data holds {len(rows)} rows between {test['start']} and {test['end']}, "
            f"too few for one window of {spec.window} rows and {spec.horizon} step(s)"
        )
    predicted = loaded.predict_prices(inputs)
    bounds = conformal.bounds_for(inputs, predicted, metadata["intervals"], spec)
    column = step - 1
    target_dates = pd.DatetimeIndex(rows[DATE_COLUMN].iloc[spec.window + column : spec.window + column + len(inputs)])
    return PeriodForecasts(
        dates=target_dates,
        actual=futures[:, column],
        predicted=predicted[:, column],
        bounds={key: (lower[:, column], upper[:, column]) for key, (lower, upper) in bounds.items()},
        step=step,
    )


def _metrics_basis(metadata: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """The scores to tabulate: the walk-forward backtest's when stored, else the test split's."""
    backtest = metadata.get("backtest") or {}
    if backtest.get("summary"):
        protocol = backtest.get("protocol", {})
        basis = (
            f"walk-forward backtest: {protocol.get('folds_run', '?')} folds x {protocol.get('stride', '?')} rows, "
            f"refit {protocol.get('refit', '?')}"
        )
        return basis, backtest["summary"], backtest.get("coverage", {})
    return "test split", metadata.get("metrics", {}), metadata.get("intervals", {}).get("test_coverage", {})


def _cell(value: Any, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)


def _draw_forecast(axes: Any, forecasts: PeriodForecasts, rows: slice) -> None:
    """Bands, outcome and forecast on one set of axes, for the selected windows."""
    dates = forecasts.dates[rows]
    for key in (key for key in BAND_LEVELS if key in forecasts.bounds):
        lower, upper = forecasts.bounds[key]
        axes.fill_between(
            dates, lower[rows], upper[rows], color=BAND_COLOURS[key], label=f"{key}% interval", linewidth=0
        )
    axes.plot(dates, forecasts.actual[rows], color="black", linewidth=1.0, label="actual")
    axes.plot(dates, forecasts.predicted[rows], color="#d62728", linewidth=1.0, label="forecast")
    axes.grid(alpha=0.3)


def draw_version_report(metadata: dict[str, Any], forecasts: PeriodForecasts, notes: list[str]) -> bytes:
    """PNG of forecast vs actual with bands, residuals over time and as histogram, and the score table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure = plt.figure(figsize=FIGURE_SIZE, dpi=DPI)
    grid = figure.add_gridspec(4, 3, height_ratios=[3.2, 2.0, 1.6, 1.0], hspace=0.45, wspace=0.25, top=0.93)
    title = (
        f"{metadata['name']} v{metadata['version']}: {metadata['architecture']}, window {metadata['window']}, "
        f"horizon {metadata['horizon']}, label '{metadata['label']}' ({metadata.get('data', {}).get('name', '')})"
    )
    figure.suptitle(title + ("\n" + "; ".join(notes) if notes else ""), fontsize=12)

    full = figure.add_subplot(grid[0, :2])
    _draw_forecast(full, forecasts, slice(None))
    full.set_title(f"Test period, {forecasts.step}-step-ahead forecast with conformal intervals", fontsize=10)
    full.set_ylabel("price")
    full.legend(loc="upper left", fontsize=8)
    zoom = figure.add_subplot(grid[0, 2])
    _draw_forecast(zoom, forecasts, slice(-ZOOM_WINDOWS, None))
    zoom.set_title(f"Last {min(ZOOM_WINDOWS, len(forecasts.actual))} forecasts", fontsize=10)
    zoom.tick_params(axis="x", labelrotation=30, labelsize=8)

    residuals = forecasts.actual - forecasts.predicted
    over_time = figure.add_subplot(grid[1, :2])
    over_time.axhline(0, color="grey", linewidth=0.8)
    over_time.plot(forecasts.dates, residuals, color="#1f77b4", linewidth=0.7)
    over_time.set_title("Residuals (actual - forecast) over time", fontsize=10)
    over_time.set_ylabel("price units")
    over_time.grid(alpha=0.3)
    histogram = figure.add_subplot(grid[1, 2])
    histogram.hist(residuals, bins=HISTOGRAM_BINS, color="#1f77b4", alpha=0.8)
    histogram.axvline(0, color="grey", linewidth=0.8)
    histogram.set_title(f"Residuals: mean {residuals.mean():.3g}, sd {residuals.std():.3g}", fontsize=10)

    basis, scores, coverage = _metrics_basis(metadata)
    table_axes = figure.add_subplot(grid[2, :])
    table_axes.axis("off")
    table_axes.set_title(f"Scores in price units, {basis}", fontsize=10)
    rows = [name for name in TABLE_ROWS if name in scores]
    cells = [
        [
            _cell(scores[name].get("mae"), "{:.4g}"),
            _cell(scores[name].get("rmse"), "{:.4g}"),
            _cell(scores[name].get("mape"), "{:.3f}%"),
            _cell(scores[name].get("mae_ratio_to_naive"), "{:.4f}"),
            _cell(scores[name].get("mase"), "{:.4f}"),
            _cell(scores[name].get("directional_accuracy"), "{:.3f}"),
            _cell(scores[name].get("always_up_rate"), "{:.3f}"),
            _cell(scores[name].get("windows"), "{:d}"),
        ]
        for name in rows
    ]
    if cells:
        table = table_axes.table(
            cellText=cells,
            rowLabels=rows,
            colLabels=["MAE", "RMSE", "MAPE", "ratio to naive", "MASE (H-K)", "direction", "always up", "windows"],
            loc="center",
            cellLoc="center",
        )
        table.scale(1, 1.3)

    coverage_axes = figure.add_subplot(grid[3, :])
    coverage_axes.axis("off")
    coverage_axes.set_title(f"Interval coverage ({basis})", fontsize=10)
    keys = sorted(coverage, key=float)
    if keys:
        coverage_table = coverage_axes.table(
            cellText=[
                [f"{float(key):.0f}%" for key in keys],
                [_cell(coverage[key].get("coverage"), "{:.1%}") for key in keys],
                [_cell(coverage[key].get("mean_width"), "{:.4g}") for key in keys],
            ],
            rowLabels=["level", "empirical coverage", "mean width"],
            loc="center",
            cellLoc="center",
        )
        coverage_table.scale(1, 1.3)

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def render_version_report(
    store: ModelStore, name: str, version: int, frame: pd.DataFrame | None = None, step: int = 1
) -> bytes:
    """The report PNG of a stored version.

    Without `frame`, the data is re-read from `metadata["data"]["path"]`;
    NotFoundError says so when that file is gone.
    """
    from training.artifact import load_version

    metadata = store.read_metadata(name, version)
    notes: list[str] = []
    if frame is None:
        frame, notes = _load_frame(metadata)
    loaded = load_version(store, name, version)
    return draw_version_report(loaded.metadata, forecast_test_period(loaded, frame, step=step), notes)


def write_version_report(
    store: ModelStore, name: str, version: int, target: Path | None = None, frame: pd.DataFrame | None = None
) -> Path:
    """Draw a version's report and write it atomically to `target` (default: `report.png` in its folder).

    Readers see the whole file or none, so one that finds it can serve it.
    """
    target = target or store.version_dir(name, version) / REPORT_FILE
    png = render_version_report(store, name, version, frame=frame)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(target, png)
    return target
