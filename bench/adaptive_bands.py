"""Adaptive bands under a shift: coverage of the static conformal band against adaptive conformal inference.

    .venv/bin/python bench/adaptive_bands.py [--seeds 20] [--steps 2000] [--gamma 0.005] [--json OUT]

Calibration scores are |N(0, 1)| draws (`--calibration` of them, as the
studentised scores `training.conformal` keeps); live scores are `--shift`
times larger, the errors of a market more volatile than the calibration
windows. For each level the static band serves the calibration quantile
at 1 - level for every step; the adaptive band serves the quantile at the
working miscoverage of Gibbs & Candès (2021), moved after every live step
by `app.ledger.statistics.aci_update`, with `--gamma`. Both bands are read
through `app.ledger.statistics.quantile_at`. Printed per level, averaged
over `--seeds` seeds: coverage over the whole run and over its last half,
and the adaptive band's mean half-width over the static one's.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import numpy as np
from harness import add_json_option, write_json
from scipy import stats

from app.ledger.statistics import aci_update, quantile_at

DEFAULT_SEEDS = 20
DEFAULT_CALIBRATION = 500
DEFAULT_STEPS = 2000
# Live errors this many times the calibration errors' scale.
DEFAULT_SHIFT = 1.17
# The step size of Gibbs & Candès' experiments: slow enough that a band does
# not swing after each breach, fast enough to recover within a few hundred steps.
DEFAULT_GAMMA = 0.005
DEFAULT_LEVELS = (0.8, 0.9)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; the defaults finish in seconds."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=DEFAULT_SEEDS, help="independent runs averaged")
    parser.add_argument("--calibration", type=int, default=DEFAULT_CALIBRATION, help="calibration scores per run")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="live scored steps per run")
    parser.add_argument("--shift", type=float, default=DEFAULT_SHIFT, help="live error scale over calibration's")
    parser.add_argument("--gamma", type=float, default=DEFAULT_GAMMA, help="adaptive conformal step size")
    parser.add_argument("--levels", type=float, nargs="+", default=list(DEFAULT_LEVELS), help="band levels")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first run")
    add_json_option(parser)
    return parser.parse_args(argv)


def adaptive_run(
    calibration: np.ndarray, live: np.ndarray, level: float, gamma: float
) -> tuple[np.ndarray, np.ndarray]:
    """Covered flags and half-widths of the adaptive band over one run's live scores, step by step."""
    covered = np.empty(live.size, dtype=bool)
    widths = np.empty(live.size)
    miscoverage = 1 - level
    for step, score in enumerate(live):
        widths[step] = quantile_at(calibration, miscoverage)
        covered[step] = score <= widths[step]
        miscoverage = aci_update(miscoverage, not covered[step], level, gamma)
    return covered, widths


def level_figures(
    calibrations: np.ndarray, lives: np.ndarray, level: float, gamma: float, shift: float
) -> dict[str, Any]:
    """Static and adaptive coverage of one level over every run."""
    half = lives.shape[1] // 2
    static_widths = np.array([quantile_at(calibration, 1 - level) for calibration in calibrations])
    static = lives <= static_widths[:, None]
    runs = [
        adaptive_run(calibration, live, level, gamma) for calibration, live in zip(calibrations, lives, strict=True)
    ]
    adaptive = np.stack([covered for covered, _ in runs])
    widths = np.stack([width for _, width in runs])
    ratios = widths / static_widths[:, None]
    return {
        "level": level,
        # What the static band would cover with infinitely many calibration scores.
        "static_coverage_expected": float(2 * stats.norm.cdf(stats.norm.ppf((1 + level) / 2) / shift) - 1),
        "static_coverage": float(static.mean()),
        "static_coverage_last_half": float(static[:, half:].mean()),
        "adaptive_coverage": float(adaptive.mean()),
        "adaptive_coverage_last_half": float(adaptive[:, half:].mean()),
        "adaptive_over_static_width": float(np.mean(ratios[np.isfinite(ratios)])),
        "infinite_adaptive_widths": int((~np.isfinite(widths)).sum()),
    }


def main(argv: list[str] | None = None) -> int:
    """Simulate every seed once, then print one line per level."""
    args = parse_args(argv)
    started = time.perf_counter()
    generators = [np.random.default_rng(args.seed + run) for run in range(args.seeds)]
    calibrations = np.stack([np.sort(np.abs(generator.standard_normal(args.calibration))) for generator in generators])
    lives = np.stack([args.shift * np.abs(generator.standard_normal(args.steps)) for generator in generators])
    results = [level_figures(calibrations, lives, level, args.gamma, args.shift) for level in args.levels]
    seconds = time.perf_counter() - started
    print(
        f"{args.seeds} seeds x {args.steps} live steps; {args.calibration} calibration scores |N(0,1)|, "
        f"live |N(0,{args.shift}^2)|; gamma {args.gamma}; the width that fits the live scores is "
        f"{args.shift} x the static one ({seconds:.1f}s)"
    )
    header = ("level", "static", "static 2nd half", "static expected", "adaptive", "adaptive 2nd half", "width ratio")
    print("  ".join(f"{name:>17}" for name in header))
    for row in results:
        cells = (
            f"{row['level']:.2f}",
            f"{row['static_coverage']:.3f}",
            f"{row['static_coverage_last_half']:.3f}",
            f"{row['static_coverage_expected']:.3f}",
            f"{row['adaptive_coverage']:.3f}",
            f"{row['adaptive_coverage_last_half']:.3f}",
            f"{row['adaptive_over_static_width']:.3f}",
        )
        print("  ".join(f"{cell:>17}" for cell in cells))
    write_json(
        args.json,
        sys.argv if argv is None else ["bench/adaptive_bands.py", *argv],
        {"settings": vars(args) | {"json": str(args.json)}, "seconds": seconds, "results": results},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
