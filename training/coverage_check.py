"""Whether the bands a version serves cover at their level, judged the way they are served.

A `path` band promises that the whole forecast path lies inside it, so it is
judged on path coverage (every step inside); its step-1 coverage is far above
the level (a correct 90 % path band covers step 1 about 97 % of the time) and
would refuse every correct path band. A `per_step` band promises each step
on its own, so every step is judged, with Holm's step-down over the steps so
that checking h steps does not refuse a correct band h times as often.

Outcomes of windows one row apart share target days, so they are not
independent draws: the s-step outcome of the window at origin t and that of
origin t + s share no innovation. Each binomial check therefore uses every
s-th window (every h-th for the path), which keeps its size at the level
without an assumption about the dependence; the coverage over every window
is reported beside it. See docs/design.md, "Promotion gate and the default version".
"""

from __future__ import annotations

from typing import Any

import numpy as np

from training import significance


def _step_check(inside: np.ndarray, every: int, level: float, alpha: float) -> dict[str, Any]:
    """The binomial check of one kind of outcome (a step's, or the whole path's) on every `every`-th window."""
    thinned = inside[::every]
    covered, count = int(thinned.sum()), len(thinned)
    tolerance = significance.coverage_within_tolerance(covered, count, level, alpha)
    return {
        "coverage": None,
        **tolerance,
        "p_value": significance.binomial_p_value(covered, count, level),
        "every_nth_window": every,
        "coverage_all_windows": float(inside.mean()) if len(inside) else None,
    }


def _described(check: dict[str, Any]) -> str:
    """A check's coverage in words, for the gate's reason."""
    if check["coverage"] is None:
        return "not measured: no windows"
    text = f"{check['coverage']:.3f} of {check['windows']} windows"
    return text if check.get("rejected") is not None else f"{text} (tolerance {check['low']:.3f}-{check['high']:.3f})"


def served_band_coverage(
    actual: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    band: str,
    level: float,
    alpha: float,
) -> dict[str, Any]:
    """The coverage check of a band at `level` on (windows, horizon) outcomes and bounds, in time order.

    `within` is the verdict: for a path band, its path coverage is a plausible
    Binomial draw at `level` (two-sided, at `alpha`); for per-step bands, Holm
    at family-wise `alpha` rejects no step's "covers at `level`". `coverage`
    is the path coverage (path) or the step coverage furthest from the level
    (per_step); `failed` names what failed, in words.
    """
    actual = np.asarray(actual, dtype=np.float64)
    inside: np.ndarray = np.asarray((actual >= lower) & (actual <= upper))
    horizon = actual.shape[1]
    pooled = float(inside.mean()) if inside.size else None
    if band == "path":
        check = _step_check(np.asarray(inside.all(axis=1)), horizon, level, alpha)
        return {
            **check,
            "band": band,
            "judged_on": "path coverage (every step inside), every h-th window",
            "pooled_over_steps": pooled,
            "step_1": float(inside[:, 0].mean()) if len(inside) else None,
            "failed": "" if check["within"] else f"path coverage {_described(check)}",
        }
    steps = [_step_check(inside[:, step], step + 1, level, alpha) for step in range(horizon)]
    rejected = significance.holm_rejections([step["p_value"] for step in steps], alpha)
    for number, (step, refused) in enumerate(zip(steps, rejected, strict=True), start=1):
        step.update(step=number, rejected=refused)
    worst = max(steps, key=lambda step: abs((step.get("coverage") or 0.0) - level))
    failed = [step for step in steps if step["rejected"]]
    return {
        "band": band,
        "judged_on": "each step's coverage (step s on every s-th window), Holm over steps",
        "within": bool(steps) and not failed,
        "coverage": worst.get("coverage"),
        "windows": worst["windows"],
        "low": worst["low"],
        "high": worst["high"],
        "pooled_over_steps": pooled,
        "steps": steps,
        "failed": "; ".join(
            f"step {step['step']} coverage {_described(step)} (binomial p {step['p_value']:.4g}, rejected by Holm)"
            for step in failed
        ),
    }
