"""Retrying the promotion gate: false promotions over 20 attempts at the null, today's rule and attempt spending.

    .venv/bin/python bench/attempts.py [--datasets 4000] [--attempts 20] [--windows 500] [--json OUT]

Each simulated dataset gets `--attempts` candidates scored on one evaluation period. A candidate's loss
difference to naive is sqrt(rho) s + sqrt(1 - rho) e: s shared by all attempts on the dataset (the same
prices), e its own; rho 0.45 reproduces issue 26's figures for today's rule (5.5 / 12 / 18 / 28 / 36.5 %
for 1 / 3 / 5 / 10 / 20 attempts). Tests and verdicts are `training.significance.diebold_mariano` and
`training.gate.decide` fed the attempt ledger, without spending (today) and with it. `--edge` adds a
scenario where every candidate truly beats naive, to show what spending costs in power.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import numpy as np
from harness import add_json_option, write_json

from training.gate import GateSettings, attempt_entry, decide
from training.significance import diebold_mariano

DEFAULT_DATASETS = 4000
DEFAULT_ATTEMPTS = 20
# About the test part of the sample's backtest: 3 folds of a 15 % test share of 8,000 rows is 1,200; fewer
# windows only make each test noisier, not its level different.
DEFAULT_WINDOWS = 500
DEFAULT_RHO = 0.45
DEFAULT_ALPHA = 0.05
DEFAULT_EDGE = 0.08
REPORTED = (1, 3, 5, 10, 20)
PERIOD = {"test_start": "2015-01-02", "test_end": "2017-11-10"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; the defaults take well under a minute on two cores."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=int, default=DEFAULT_DATASETS, help="simulated datasets per scenario")
    parser.add_argument("--attempts", type=int, default=DEFAULT_ATTEMPTS, help="candidates per dataset")
    parser.add_argument("--windows", type=int, default=DEFAULT_WINDOWS, help="evaluation windows per candidate")
    parser.add_argument(
        "--rho", type=float, default=DEFAULT_RHO, help="share of the loss difference all attempts share"
    )
    parser.add_argument("--alpha", type=float, default=DEFAULT_ALPHA, help="the gate's significance level")
    parser.add_argument("--edge", type=float, default=DEFAULT_EDGE, help="the skilled scenario's edge, in sd units")
    parser.add_argument("--seed", type=int, default=0)
    add_json_option(parser)
    return parser.parse_args(argv)


def candidate(test: dict[str, Any], number: int) -> dict[str, Any]:
    """A version's metadata as the gate reads it: one DM test (horizon 1: step 1 and pooled are the same),
    never worse than drift, coverage within tolerance, so only the skill tests decide."""
    return {
        "version": number,
        "horizon": 1,
        "data": {"sha256": "simulated"},
        "backtest": {
            "summary": {"model": {"mae_ratio_to_naive": 1.0}},
            "protocol": PERIOD,
            "evidence": {
                "vs_naive_step_1": test,
                "vs_naive_pooled": test,
                "vs_drift_pooled": test,
                "mae": {"model": 1.0, "naive": 1.0, "drift": 2.0},
                "coverage_90": {"within": True, "coverage": 0.9, "windows": 500, "low": 0.87, "high": 0.93},
            },
        },
    }


def first_promotions(generator: np.random.Generator, args: argparse.Namespace, edge: float) -> dict[str, np.ndarray]:
    """Per rule, per dataset: the attempt (1-based) of the first promotion, 0 when none of them promoted."""
    rules = {
        "today": GateSettings(significance_level=args.alpha, spend_over_attempts=False),
        "spending": GateSettings(significance_level=args.alpha, spend_over_attempts=True),
    }
    first = {name: np.zeros(args.datasets, dtype=int) for name in rules}
    naive_loss = np.zeros(args.windows)
    for dataset in range(args.datasets):
        shared = generator.normal(size=args.windows)
        ledgers: dict[str, list[dict[str, Any]]] = {name: [] for name in rules}
        for attempt in range(1, args.attempts + 1):
            own = generator.normal(size=args.windows)
            difference = np.sqrt(args.rho) * shared + np.sqrt(1 - args.rho) * own - edge
            metadata = candidate(diebold_mariano(naive_loss + difference, naive_loss, 1), attempt)
            for name, gate in rules.items():
                if first[name][dataset]:
                    continue
                decision = decide(metadata, None, gate, attempts=ledgers[name])
                ledgers[name].append(attempt_entry(decision, attempt, "simulated"))
                if decision.promoted:
                    first[name][dataset] = attempt
            if all(first[name][dataset] for name in rules):
                break
    return first


def rates(first: np.ndarray, attempts: int) -> dict[str, float]:
    """The share of datasets with a promotion within the first k attempts, for each reported k."""
    return {str(k): float(np.mean((first > 0) & (first <= k))) for k in REPORTED if k <= attempts}


def main(argv: list[str] | None = None) -> int:
    """Run the null and the skilled scenario; print the share promoted within k attempts, per rule."""
    args = parse_args(argv)
    generator = np.random.default_rng(args.seed)
    started = time.perf_counter()
    results: dict[str, dict[str, dict[str, float]]] = {}
    for scenario, edge in (("null", 0.0), ("skilled", args.edge)):
        first = first_promotions(generator, args, edge)
        results[scenario] = {rule: rates(found, args.attempts) for rule, found in first.items()}
    seconds = time.perf_counter() - started
    error = float(np.sqrt(args.alpha * (1 - args.alpha) / args.datasets))
    print(
        f"{args.datasets} datasets x {args.attempts} attempts, {args.windows} windows, rho {args.rho}, "
        f"alpha {args.alpha} (Monte Carlo s.e. near alpha: {error:.4f}); {seconds:.1f}s"
    )
    print("share of datasets with a promotion within k attempts")
    header = ["scenario", "rule", *(f"k={k}" for k in REPORTED if k <= args.attempts)]
    print("  ".join(f"{name:>9}" for name in header))
    for scenario, by_rule in results.items():
        label = "null" if scenario == "null" else f"edge {args.edge:g}"
        for rule, shares in by_rule.items():
            print("  ".join(f"{cell:>9}" for cell in (label, rule, *(f"{share:.4f}" for share in shares.values()))))
    write_json(
        args.json,
        sys.argv if argv is None else ["bench/attempts.py", *argv],
        {"settings": vars(args) | {"json": str(args.json)}, "seconds": seconds, "results": results},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
