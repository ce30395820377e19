"""Scoring kept forecasts against the closes that arrived after them: pure functions, no I/O.

A step is scored once its target session's close is in the dataset: in
log-return space relative to the origin (|log(actual / forecast)| and the
same for naive, the window's last value), and inside each band or not. A
close that moved from the origin by about a split ratio (1/2, 3, ...) is
flagged `split_suspect`, never scored as a miss. A step whose target was
already in the dataset when the forecast was served is a replay, scored
apart from live forecasts. See docs/ledger.md.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from app.ledger.store import LedgerStore
from training.data import PRICE_COLUMNS

# Share, stock and reverse splits; a close this near to origin * ratio is suspected of one.
SPLIT_RATIOS = (1 / 10, 1 / 5, 1 / 4, 1 / 3, 1 / 2, 2.0, 3.0, 4.0, 5.0, 10.0)
SPLIT_TOLERANCE = 0.03


def split_suspect(actual: float, origin_value: float) -> bool:
    """Whether actual / origin is within SPLIT_TOLERANCE (relative) of a split ratio."""
    ratio = actual / origin_value
    return any(abs(ratio / split - 1.0) <= SPLIT_TOLERANCE for split in SPLIT_RATIOS)


def score_steps(
    forecast: Mapping[str, Any], closes: Mapping[str, float], scored: Iterable[int], scored_at: str
) -> list[dict[str, Any]]:
    """Score rows for the steps of one kept forecast whose targets now have a close.

    `closes` maps ISO dates to the forecast's label column; `scored` holds
    the steps (1-based) already scored, which are left out.
    """
    done = set(scored)
    naive = float(forecast["label_last"])
    data_through = forecast.get("data_through")
    rows = []
    for index, step in enumerate(forecast["steps"]):
        number, target = index + 1, step.get("date")
        if number in done or target is None or target not in closes:
            continue
        actual, predicted = float(closes[target]), float(step["close"])
        rows.append(
            {
                "forecast_id": forecast["forecast_id"],
                "step": number,
                "model": forecast["model"],
                "version": forecast["version"],
                "served_as": forecast["served_as"],
                "dataset": forecast.get("dataset"),
                "origin": forecast["origin"],
                "target": target,
                "replay": int(data_through is not None and target <= data_through),
                "actual": actual,
                "forecast": predicted,
                "naive": naive,
                "log_error": math.log(actual / predicted),
                "naive_log_error": math.log(actual / naive),
                "inside": {level: int(lower <= actual <= upper) for level, (lower, upper) in step["bounds"].items()},
                "scale": forecast.get("scale"),
                "split_suspect": int(split_suspect(actual, naive)),
                "scored_at": scored_at,
            }
        )
    return rows


def score_forecasts(
    forecasts: Iterable[Mapping[str, Any]],
    closes_of: Mapping[str, Mapping[str, float]],
    scored: Mapping[str, Iterable[int]],
    scored_at: str,
) -> list[dict[str, Any]]:
    """Score rows for every step of `forecasts` now scorable; `closes_of` maps a label column to its closes."""
    rows: list[dict[str, Any]] = []
    for forecast in forecasts:
        closes = closes_of.get(str(forecast["label"]))
        if closes:
            rows.extend(score_steps(forecast, closes, scored.get(str(forecast["forecast_id"]), ()), scored_at))
    return rows


def score_dataset(store: LedgerStore, dataset: str, closes_of: Mapping[str, Mapping[str, float]]) -> int:
    """Score every open forecast of `dataset` against its closes; how many forecasts gained a score."""
    forecasts = store.open_forecasts(dataset)
    if not forecasts:
        return 0
    scored_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    rows = score_forecasts(forecasts, closes_of, store.scored_steps(dataset), scored_at)
    store.add_scores(rows)
    return len({row["forecast_id"] for row in rows})


def closes_by_column(frame: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Each price column of a clean dataset frame (`training.data.load_prices`) as ISO date to value."""
    days = [day.isoformat() for day in pd.to_datetime(frame["date"]).dt.date]
    return {
        column: dict(zip(days, frame[column].astype(float).tolist(), strict=True))
        for column in PRICE_COLUMNS
        if column in frame.columns
    }


__all__ = ["SPLIT_RATIOS", "closes_by_column", "score_dataset", "score_forecasts", "score_steps", "split_suspect"]
