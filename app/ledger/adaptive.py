"""Adaptive bands: each band's working level, moved by the live scores of the version that serves it.

Adaptive conformal inference (Gibbs & Candès 2021, "Adaptive Conformal
Inference Under Distribution Shift") on the version's studentised score:
for each level and step, alpha_{t+1} = alpha_t + gamma (alpha - err_t),
err_t = 1 when the live score exceeded the calibration quantile at
1 - alpha_t. The served band is the quantile at the final alpha, applied as
a power of the calibrated band (same forecast, same volatility). Pure
functions; the ledger's scores in, factors out. See docs/ledger.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.ledger.statistics import aci_update, quantile_at


@dataclass(frozen=True)
class Bands:
    """Which basis gives a version's bands, and for `adaptive` the power of each calibrated band."""

    basis: str
    """`calibrated` (as at training) or `adaptive`."""
    live_scores: int
    working_levels: dict[str, list[float]] = field(default_factory=dict)
    """Level key to each step's working coverage level (1 - alpha_t)."""
    factors: dict[str, np.ndarray] = field(default_factory=dict)
    """Level key to each step's half-width ratio (adaptive over calibrated)."""
    capped: list[str] = field(default_factory=list)
    """Levels whose working level went past what the calibration scores can give (held at the widest)."""

    def describe(self) -> dict[str, Any]:
        """The answer's `bands` block."""
        described: dict[str, Any] = {"basis": self.basis, "live_scores": self.live_scores}
        if self.basis == "adaptive":
            described["working_levels"] = self.working_levels
            if self.capped:
                described["capped"] = self.capped
        return described


CALIBRATED = Bands(basis="calibrated", live_scores=0)


def live_score(row: Mapping[str, Any]) -> float:
    """The studentised score of a scored step: |log error| over the window's volatility (or alone without one)."""
    scale = row.get("scale")
    return abs(float(row["log_error"])) / float(scale) if scale else abs(float(row["log_error"]))


def adaptive_bands(
    intervals: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], *, gamma: float, min_scores: int
) -> Bands:
    """The bands a version serves next, from its live score rows (oldest target first).

    `intervals` is the version's `metadata["intervals"]`; without
    calibration scores (path bands, versions trained before they were kept)
    the bands stay calibrated.
    """
    scores = intervals.get("calibration_scores")
    live = [row for row in rows if not row["replay"] and not row["split_suspect"]]
    steps: dict[int, list[float]] = {}
    for row in live:
        steps.setdefault(int(row["step"]), []).append(live_score(row))
    sessions = len(steps.get(1, []))
    if not scores or sessions < min_scores:
        return Bands(basis="calibrated", live_scores=sessions)
    working: dict[str, list[float]] = {}
    factors: dict[str, np.ndarray] = {}
    capped: list[str] = []
    for key in intervals.get("half_widths", {}):
        level = int(key) / 100 if key.isdigit() else float(key)
        levels, ratios = [], []
        for step, calibration in enumerate(scores, start=1):
            ordered = np.asarray(calibration, dtype=np.float64)
            alpha = 1.0 - level
            for score in steps.get(step, []):
                alpha = aci_update(alpha, score > quantile_at(ordered, alpha), level, gamma)
            width, nominal = quantile_at(ordered, alpha), quantile_at(ordered, 1.0 - level)
            if math.isinf(width):
                width = float(ordered[-1])
                capped.append(key)
            levels.append(round(1.0 - alpha, 6))
            ratios.append(width / nominal if nominal > 0 else 1.0)
        working[key], factors[key] = levels, np.asarray(ratios)
    return Bands(
        basis="adaptive", live_scores=sessions, working_levels=working, factors=factors, capped=sorted(set(capped))
    )


def apply_bands(outputs: np.ndarray, levels: Sequence[str], bands: Bands) -> np.ndarray:
    """Forecasts and bounds (n, 1 + 2 * levels, horizon) with each adapted band's half-width scaled.

    A calibrated bound is forecast * exp(-+w * scale); raising bound / forecast
    to the power r gives the band of half-width r * w with the same scale.
    """
    if bands.basis != "adaptive":
        return outputs
    adapted = outputs.copy()
    forecast, count = outputs[:, 0, :], len(levels)
    for index, key in enumerate(levels):
        ratio = bands.factors.get(key)
        if ratio is None:
            continue
        adapted[:, 1 + index, :] = forecast * (outputs[:, 1 + index, :] / forecast) ** ratio
        adapted[:, 1 + count + index, :] = forecast * (outputs[:, 1 + count + index, :] / forecast) ** ratio
    return adapted


__all__ = ["CALIBRATED", "Bands", "adaptive_bands", "apply_bands", "live_score"]
