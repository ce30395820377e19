"""The monitoring chart: served step-1 forecasts and their widest band against the actuals, and rolling coverage.

Score rows and served bands in, PNG bytes out. Drawn with matplotlib's Agg
canvas, without pyplot's global state, in the caller's thread: it needs no
Keras, so the API process draws it off the event loop (`asyncio.to_thread`).
Drawings take turns, since matplotlib shares font and text caches across
figures. A ledger without scores gets a chart that says so. See
docs/ledger.md, "Monitoring".
"""

from __future__ import annotations

import datetime as dt
import io
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from app.ledger.monitoring import Row, levels_of, nominal_of

# Coverage is averaged over this many step-1 forecasts: a month of sessions.
ROLLING_FORECASTS = 20
FIGURE_SIZE = (11.0, 7.0)
DPI = 100
_DRAWING = threading.Lock()


def draw_monitoring_chart(
    title: str, rows: Sequence[Row], served_steps: Mapping[str, Sequence[Mapping[str, Any]]]
) -> bytes:
    """PNG: step-1 forecasts, the widest band and actuals over time with breaches marked; rolling coverage per level.

    `rows` are step-1 score rows in time order; `served_steps` the kept
    forecasts' steps by id (`LedgerStore.served_steps`): a forecast past
    the retention is drawn without its band.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with _DRAWING:
        figure = Figure(figsize=FIGURE_SIZE, dpi=DPI, layout="constrained")
        FigureCanvasAgg(figure)
        figure.suptitle(title, fontsize=12)
        if not rows:
            axes = figure.subplots()
            axes.axis("off")
            axes.text(0.5, 0.5, "no live scored forecasts yet", ha="center", va="center", fontsize=14)
        else:
            prices, coverage = figure.subplots(2, 1, sharex=True, height_ratios=[3, 2])
            _draw_forecasts(prices, rows, served_steps)
            _draw_rolling_coverage(coverage, rows)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=DPI)
        return buffer.getvalue()


def _draw_forecasts(axes: Any, rows: Sequence[Row], served_steps: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
    dates = [dt.date.fromisoformat(str(row["target"])) for row in rows]
    levels = levels_of(rows)
    if levels:
        widest = levels[-1]
        bands = [_bounds(served_steps.get(str(row["forecast_id"])), widest) for row in rows]
        lower = np.array([band[0] for band in bands], dtype=np.float64)
        upper = np.array([band[1] for band in bands], dtype=np.float64)
        axes.fill_between(dates, lower, upper, color="#c6dbef", linewidth=0, label=f"{widest} % band")
        outside = [index for index, row in enumerate(rows) if not row["inside"].get(widest, 1)]
        axes.scatter(
            [dates[index] for index in outside],
            [rows[index]["actual"] for index in outside],
            marker="x",
            color="#d62728",
            zorder=3,
            label=f"outside the {widest} % band ({len(outside)})",
        )
    axes.plot(dates, [row["actual"] for row in rows], color="black", linewidth=1.0, label="actual")
    axes.plot(dates, [row["forecast"] for row in rows], color="#d62728", linewidth=1.0, label="forecast")
    axes.set_title(f"Step-1 forecasts against the actual closes ({len(rows)} scored)", fontsize=10)
    axes.set_ylabel("price")
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left", fontsize=8)


def _draw_rolling_coverage(axes: Any, rows: Sequence[Row]) -> None:
    dates = [dt.date.fromisoformat(str(row["target"])) for row in rows]
    window = min(ROLLING_FORECASTS, len(rows))
    levels = levels_of(rows)
    for index, level in enumerate(levels):
        colour = f"C{index}"
        inside = np.array([float(row["inside"].get(level, np.nan)) for row in rows])
        rolling = np.convolve(inside, np.ones(window) / window, mode="valid")
        axes.plot(dates[window - 1 :], rolling, color=colour, linewidth=1.0, label=f"{level} %")
        axes.axhline(nominal_of(level), color=colour, linestyle="--", linewidth=0.8)
    axes.set_ylim(0, 1.05)
    axes.set_ylabel(f"coverage, last {window}")
    axes.set_title("Rolling coverage per level (dashed: nominal)", fontsize=10)
    axes.grid(alpha=0.3)
    if levels:
        axes.legend(loc="lower left", fontsize=8, ncols=3)


def _bounds(steps: Sequence[Mapping[str, Any]] | None, level: str) -> tuple[float, float]:
    if not steps or level not in steps[0].get("bounds", {}):
        return np.nan, np.nan
    lower, upper = steps[0]["bounds"][level]
    return float(lower), float(upper)


__all__ = ["ROLLING_FORECASTS", "draw_monitoring_chart"]
