"""Sequential skill test: false alarms when a desk looks after every score, and power.

    .venv/bin/python bench/sequential_test.py [--desks 2000] [--steps 1000] [--alpha 0.05] [--json OUT]

Simulated desks each receive `--steps` paired losses in time order and
look after every one. Under the null the model's and naive's losses are
exchangeable (both |t(4)| draws); in the power scenario the model's are
`--edge` smaller (scaled by 1 - edge). For each scenario it prints the
share of desks that ever reject with the ledger's sign e-processes
(`app.ledger.statistics.sign_e_processes`, both directions: at most alpha
under the null, by Ville's inequality), beside a one-sided t-test on the
mean loss difference repeated after every score from `--min-steps` on
(each look valid alone, their union not) and the same t-test looked at
once, at the last step. Everything is vectorised over desks.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import numpy as np
from harness import add_json_option, write_json
from scipy import stats

from app.ledger.statistics import sign_e_processes

DEFAULT_DESKS = 2000
DEFAULT_STEPS = 1000
DEFAULT_ALPHA = 0.05
# The power scenario: the model's losses are this share smaller than naive's.
DEFAULT_EDGE = 0.10
# The repeated t-test's first look; earlier looks would only inflate it more.
DEFAULT_MIN_STEPS = 10
# Student t with 4 degrees of freedom: heavy tails like daily log errors.
TAIL_DEGREES = 4


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; the defaults finish in well under a minute on two cores."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--desks", type=int, default=DEFAULT_DESKS, help="simulated desks per scenario")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="scored forecasts per desk, each looked at")
    parser.add_argument("--alpha", type=float, default=DEFAULT_ALPHA, help="the level every test is run at")
    parser.add_argument("--edge", type=float, default=DEFAULT_EDGE, help="how much smaller the model's losses are")
    parser.add_argument("--min-steps", type=int, default=DEFAULT_MIN_STEPS, help="the repeated t-test's first look")
    parser.add_argument("--seed", type=int, default=0)
    add_json_option(parser)
    return parser.parse_args(argv)


def repeated_t_test(differences: np.ndarray, alpha: float, min_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Per desk: did a one-sided t-test of mean > 0 reject at any look from `min_steps` on, and at the last step."""
    steps = differences.shape[1]
    count = np.arange(1, steps + 1, dtype=np.float64)
    total = np.cumsum(differences, axis=1)
    squares = np.cumsum(differences**2, axis=1)
    mean = total / count
    with np.errstate(divide="ignore", invalid="ignore"):
        variance = (squares - count * mean**2) / (count - 1)
        statistic = mean / np.sqrt(variance / count)
    critical = stats.t.ppf(1 - alpha, np.maximum(count - 1, 1))
    rejected = statistic > critical
    rejected[:, : min_steps - 1] = False
    return rejected.any(axis=1), rejected[:, -1]


def first_crossings(paths: np.ndarray, threshold: float) -> np.ndarray:
    """Step (1-based) at which each desk's path first reaches `threshold`; 0 where it never does."""
    crossed = paths >= threshold
    return np.where(crossed.any(axis=1), np.argmax(crossed, axis=1) + 1, 0)


def scenario(generator: np.random.Generator, args: argparse.Namespace, edge: float) -> dict[str, Any]:
    """One scenario's rejection shares over `args.desks` desks."""
    shape = (args.desks, args.steps)
    naive = np.abs(generator.standard_t(TAIL_DEGREES, size=shape))
    model = (1 - edge) * np.abs(generator.standard_t(TAIL_DEGREES, size=shape))
    better, worse = sign_e_processes(model, naive)
    crossed = first_crossings(better, 1 / args.alpha)
    t_any, t_last = repeated_t_test(naive - model, args.alpha, args.min_steps)
    return {
        "edge": edge,
        "e_better_ever": float(np.mean(crossed > 0)),
        "e_worse_ever": float(np.mean(first_crossings(worse, 1 / args.alpha) > 0)),
        "median_first_crossing": float(np.median(crossed[crossed > 0])) if (crossed > 0).any() else None,
        "t_test_every_step": float(np.mean(t_any)),
        "t_test_last_step": float(np.mean(t_last)),
        "p_model_wins": float(np.mean(model < naive)),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the null and the power scenario; print one line each."""
    args = parse_args(argv)
    generator = np.random.default_rng(args.seed)
    started = time.perf_counter()
    results = {"null": scenario(generator, args, 0.0), "better": scenario(generator, args, args.edge)}
    seconds = time.perf_counter() - started
    print(
        f"{args.desks} desks x {args.steps} steps, looked at after every step, alpha {args.alpha}; "
        f"|t({TAIL_DEGREES})| losses; t-test looks from step {args.min_steps} ({seconds:.1f}s)"
    )
    header = ("scenario", "P(win)", "e better ever", "e worse ever", "median step", "t every step", "t last step")
    print("  ".join(f"{name:>13}" for name in header))
    for name, row in results.items():
        label = "exchangeable" if name == "null" else f"{row['edge']:.0%} smaller"
        step = "-" if row["median_first_crossing"] is None else f"{row['median_first_crossing']:.0f}"
        cells = (
            label,
            f"{row['p_model_wins']:.3f}",
            f"{row['e_better_ever']:.3f}",
            f"{row['e_worse_ever']:.3f}",
            step,
            f"{row['t_test_every_step']:.3f}",
            f"{row['t_test_last_step']:.3f}",
        )
        print("  ".join(f"{cell:>13}" for cell in cells))
    write_json(
        args.json,
        sys.argv if argv is None else ["bench/sequential_test.py", *argv],
        {"settings": vars(args) | {"json": str(args.json)}, "seconds": seconds, "results": results},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
