"""The data report: what was read, what was removed and why, and how the columns look.

`data_report` is a pure function of a `CleanResult` (the seed's `describe()`
with the cleaning account added); `render_charts` is the I/O edge that draws
the seed's `hist()` and a price history as PNG files.
See docs/design.md, "Data path".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from training.data import CleanResult
from training.spec import DATE_COLUMN, PRICE_COLUMNS, VOLUME_COLUMN

# The price chart switches to a log axis by itself when the highest close is
# this many times the lowest: on a linear axis decades of growth flatten the
# early years into a line along the bottom.
AUTO_LOG_RATIO = 20.0
HISTOGRAM_BINS = 50
LOG_RETURN_COLUMN = "close_log_return"
PRICE_HISTORY_FILE = "price_history.png"
HISTOGRAMS_FILE = "histograms.png"
RETURNS_FILE = "log_returns.png"


def _day(stamp: pd.Timestamp) -> str:
    return str(stamp.strftime("%Y-%m-%d"))


def _statistics(values: pd.Series) -> dict[str, float | int | None]:
    """count, mean, std, min, quartiles and max of the finite values of one column."""
    numbers = pd.to_numeric(values, errors="coerce").astype(float)
    numbers = numbers[np.isfinite(numbers)]
    if numbers.empty:
        return {"count": 0, "mean": None, "std": None, "min": None, "25%": None, "50%": None, "75%": None, "max": None}
    quartiles = numbers.quantile([0.25, 0.5, 0.75])
    return {
        "count": int(numbers.size),
        "mean": float(numbers.mean()),
        # Sample standard deviation (ddof=1), as pandas' describe() reports it.
        "std": float(numbers.std()) if numbers.size > 1 else None,
        "min": float(numbers.min()),
        "25%": float(quartiles.loc[0.25]),
        "50%": float(quartiles.loc[0.5]),
        "75%": float(quartiles.loc[0.75]),
        "max": float(numbers.max()),
    }


def log_returns(frame: pd.DataFrame) -> pd.Series:
    """Daily log returns of the close (one fewer than the rows), indexed by date."""
    close = frame["close"].to_numpy(dtype=float)
    returns = np.diff(np.log(close))
    return pd.Series(returns, index=frame[DATE_COLUMN].iloc[1:].to_numpy(), name=LOG_RETURN_COLUMN)


def _gaps(dates: pd.Series) -> dict[str, Any]:
    """The largest and the typical distance between consecutive dates, in calendar days."""
    if len(dates) < 2:
        return {"largest_gap": None, "median_gap_days": None}
    days = dates.diff().dt.days.iloc[1:]
    widest = int(days.to_numpy().argmax()) + 1
    return {
        "largest_gap": {
            "days": int(days.iloc[widest - 1]),
            "from": _day(dates.iloc[widest - 1]),
            "to": _day(dates.iloc[widest]),
        },
        "median_gap_days": float(days.median()),
    }


def data_report(clean: CleanResult) -> dict[str, Any]:
    """Everything a person should know about a price file before training on it (plain JSON)."""
    frame = clean.frame
    dates = frame[DATE_COLUMN]
    value_columns = [column for column in frame.columns if column != DATE_COLUMN]
    statistics = {column: _statistics(frame[column]) for column in value_columns}
    if "close" in frame.columns:
        statistics[LOG_RETURN_COLUMN] = _statistics(log_returns(frame))
    flagged = {reason: {"count": len(days), "dates": list(days)} for reason, days in clean.flagged.items()}
    return {
        "rows_read": clean.rows_read,
        "rows_kept": len(frame),
        "rows_dropped": dict(clean.dropped),
        "rows_dropped_total": int(sum(clean.dropped.values())),
        "date_range": {
            "start": _day(dates.iloc[0]),
            "end": _day(dates.iloc[-1]),
            "calendar_days": int((dates.iloc[-1] - dates.iloc[0]).days) + 1,
        },
        "columns": value_columns,
        **_gaps(dates),
        "flagged": flagged,
        "outliers": [dict(outlier) for outlier in clean.outliers],
        "outlier_rule": dict(clean.outlier_rule),
        "statistics": statistics,
        # How the rows fit a model's trading calendar: empty until a calendar is chosen (at training).
        "calendar_fit": dict(clean.calendar_fit),
    }


def _format_number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,d}"
    magnitude = abs(value)
    if magnitude >= 1e6:
        return f"{value:.4g}"
    if magnitude >= 100:
        return f"{value:,.2f}"
    return f"{value:.4g}"


def render_report_text(report: dict[str, Any]) -> str:
    """The report as aligned plain text for a terminal."""
    lines = [
        f"rows read      {report['rows_read']:,d}",
        f"rows kept      {report['rows_kept']:,d}",
        f"date range     {report['date_range']['start']} to {report['date_range']['end']} "
        f"({report['date_range']['calendar_days']:,d} calendar days)",
        f"columns        {', '.join(report['columns'])}",
    ]
    gap = report["largest_gap"]
    if gap is not None:
        lines.append(
            f"largest gap    {gap['days']} days ({gap['from']} to {gap['to']}); "
            f"median gap {report['median_gap_days']:g} days"
        )
    dropped = ", ".join(f"{reason} {count}" for reason, count in report["rows_dropped"].items()) or "none"
    lines.append(f"rows dropped   {report['rows_dropped_total']:,d} ({dropped})")
    for reason, flag in report["flagged"].items():
        shown = ", ".join(flag["dates"][:5]) + (f" and {flag['count'] - 5} more" if flag["count"] > 5 else "")
        lines.append(f"flagged        {reason}: {flag['count']}" + (f" ({shown})" if flag["count"] else ""))
    rule = report["outlier_rule"]
    if rule:
        lines.append(
            f"outlier rule   |log return - {rule['median']:.3g}| > {rule['threshold']:g} x {rule['scale']:.4g} "
            f"(median and 1.4826*MAD of the first {int(rule['fit_rows']):,d} rows)"
        )
    calendar = report.get("calendar_fit") or {}
    if calendar:
        closed, halted = calendar["non_sessions"], calendar["zero_volume_sessions"]
        lines.append(
            f"calendar       {calendar['name']}: {closed['count']} zero-volume row(s) on closed days dropped"
            + (f" ({', '.join(closed['dates'][:5])}{' ...' if closed['count'] > 5 else ''})" if closed["count"] else "")
        )
        lines.append(f"halts          {halted['count']} zero-volume session(s) {halted['handling']}")
    for outlier in report["outliers"][:10]:
        lines.append(
            f"  {outlier['date']}  close {_format_number(outlier['close'])} "
            f"after {_format_number(outlier['previous_close'])}  (log return {outlier['log_return']:+.3f})"
        )
    if len(report["outliers"]) > 10:
        lines.append(f"  and {len(report['outliers']) - 10} more")
    keys = ("count", "mean", "std", "min", "25%", "50%", "75%", "max")
    name_width = max(len(name) for name in [*report["statistics"], "column"])
    lines.append("")
    lines.append("column".ljust(name_width) + "".join(key.rjust(13) for key in keys))
    for column, stats in report["statistics"].items():
        lines.append(column.ljust(name_width) + "".join(_format_number(stats[key]).rjust(13) for key in keys))
    return "\n".join(lines)


def render_charts(clean: CleanResult, out_dir: str | Path, log_scale: bool | None = None) -> list[Path]:
    """Write the price history and the histograms as PNG files; returns their paths.

    `log_scale=None` picks a log price axis when the close spans more than
    `AUTO_LOG_RATIO` times its lowest value.
    """
    # Imported here so that the training path and the service never pay for
    # matplotlib; the figures are drawn on the Agg canvas, without pyplot's
    # global state, so this is safe off the main thread.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    frame = clean.frame
    dates = frame[DATE_COLUMN]
    written: list[Path] = []

    price_columns = [column for column in PRICE_COLUMNS if column in frame.columns]
    if "close" in frame.columns:
        close = frame["close"].to_numpy(dtype=float)
        if log_scale is None:
            log_scale = bool(close.min() > 0 and close.max() / close.min() > AUTO_LOG_RATIO)
        figure = Figure(figsize=(11, 6 if VOLUME_COLUMN in frame.columns else 4.5), layout="constrained")
        FigureCanvasAgg(figure)
        if VOLUME_COLUMN in frame.columns:
            price_axes, volume_axes = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
            volume_axes.fill_between(dates, frame[VOLUME_COLUMN].to_numpy(dtype=float), step="mid", color="tab:gray")
            volume_axes.set_ylabel("volume")
        else:
            price_axes = figure.subplots()
        price_axes.plot(dates, close, linewidth=0.8, color="tab:blue", label="close")
        if "adj_close" in frame.columns and not np.allclose(frame["adj_close"], close, equal_nan=True):
            price_axes.plot(dates, frame["adj_close"], linewidth=0.8, color="tab:orange", label="adj close")
            price_axes.legend(loc="upper left")
        outlier_days = pd.to_datetime([str(outlier["date"]) for outlier in clean.outliers])
        if len(outlier_days):
            marked = frame[dates.isin(outlier_days)]
            price_axes.scatter(marked[DATE_COLUMN], marked["close"], color="tab:red", s=18, zorder=3, label="outlier")
            price_axes.legend(loc="upper left")
        if log_scale:
            price_axes.set_yscale("log")
        price_axes.set_ylabel("close (log scale)" if log_scale else "close")
        price_axes.grid(True, alpha=0.3)
        price_axes.set_title(f"Close, {_day(dates.iloc[0])} to {_day(dates.iloc[-1])} ({len(frame):,d} rows)")
        written.append(folder / PRICE_HISTORY_FILE)
        figure.savefig(written[-1], dpi=100)

    columns = [*price_columns, *([VOLUME_COLUMN] if VOLUME_COLUMN in frame.columns else [])]
    if columns:
        grid_columns = 3
        grid_rows = -(-len(columns) // grid_columns)
        figure = Figure(figsize=(12, 3.2 * grid_rows), layout="constrained")
        FigureCanvasAgg(figure)
        axes = figure.subplots(grid_rows, grid_columns, squeeze=False).ravel()
        for axis, column in zip(axes, columns, strict=False):
            values = frame[column].to_numpy(dtype=float)
            axis.hist(values[np.isfinite(values)], bins=HISTOGRAM_BINS, color="tab:blue")
            axis.set_title(column)
            axis.set_ylabel("days")
            axis.grid(True, alpha=0.3)
        for axis in axes[len(columns) :]:
            axis.set_visible(False)
        figure.suptitle("Histograms of each column")
        written.append(folder / HISTOGRAMS_FILE)
        figure.savefig(written[-1], dpi=100)

    if "close" in frame.columns and len(frame) > 2:
        returns = log_returns(frame).to_numpy()
        figure = Figure(figsize=(9, 4.5), layout="constrained")
        FigureCanvasAgg(figure)
        axis = figure.subplots()
        axis.hist(returns, bins=100, color="tab:green")
        axis.set_yscale("log")
        axis.set_xlabel("daily log return of the close")
        axis.set_ylabel("days (log scale)")
        axis.grid(True, alpha=0.3)
        axis.set_title(
            f"Daily log returns: mean {returns.mean():+.5f}, std {returns.std(ddof=1):.4f}, "
            f"min {returns.min():+.3f}, max {returns.max():+.3f}"
        )
        written.append(folder / RETURNS_FILE)
        figure.savefig(written[-1], dpi=100)
    return written
