"""Seconds to train the default model on the full sample, and how SimpleRNN and GRU compare.

    .venv/bin/python bench/train_time.py [--data CSV] [--architectures lstm,simple_rnn,gru] [--json OUT]

Each architecture trains with the TrainConfig defaults (window 40, 64 units,
up to 30 epochs with early stopping, batch 64; no backtest) into a temporary
store, exactly as `stockcast-train train` would. "seconds" is the whole
`train_version` call (split, scaler, fit, test-part evaluation, save);
importing TensorFlow is measured once, separately, before the first run.
Early stopping makes the epoch count differ between architectures, so the
seconds per epoch is the fairer speed comparison.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from harness import add_json_option, write_json

from training.config import TrainConfig
from training.data import load_prices
from training.files import sha256_of
from training.fitting import TrainingRun, train_version
from training.store import ModelStore

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample" / "msft.csv"


def main() -> None:
    """Train each architecture once and print a table of the timings."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SAMPLE, help="price CSV (default: the bundled sample)")
    parser.add_argument("--architectures", default="lstm,simple_rnn,gru", help="comma list; the first is the baseline")
    add_json_option(parser)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    clean = load_prices(args.data)
    source = {"name": args.data.name, "path": str(args.data), "sha256": sha256_of(args.data)}
    started = time.perf_counter()
    import keras

    import_seconds = time.perf_counter() - started
    print(
        f"data {args.data.name}: {len(clean.frame):,d} rows; keras {keras.__version__}; "
        f"{os.cpu_count()} CPU(s) ({platform.processor() or platform.machine()}); "
        f"TensorFlow import {import_seconds:.1f}s (not counted below)"
    )

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        store = ModelStore(folder)
        for architecture in args.architectures.split(","):
            config = TrainConfig(architecture=architecture, backtest_folds=0)
            started = time.perf_counter()
            outcome = train_version(TrainingRun(architecture, clean, source, config), store)
            seconds = time.perf_counter() - started
            mase = outcome.metadata["metrics"]["model"]["mae_ratio_to_naive"]
            rows.append((architecture, seconds, outcome.epochs_run, seconds / outcome.epochs_run, mase))
            print(f"  {architecture}: {seconds:.1f}s, {outcome.epochs_run} epochs", flush=True)

    base_seconds, base_per_epoch = rows[0][1], rows[0][3]
    print()
    print(
        f"{'architecture':12} {'seconds':>8} {'epochs':>7} {'s/epoch':>8} {'x time':>7} {'x s/epoch':>10} {'ratio':>7}"
    )
    for architecture, seconds, epochs, per_epoch, mase in rows:
        print(
            f"{architecture:12} {seconds:8.1f} {epochs:7d} {per_epoch:8.2f} {seconds / base_seconds:7.2f} "
            f"{per_epoch / base_per_epoch:10.2f} {mase:7.3f}"
        )
    write_json(
        args.json,
        sys.argv,
        {
            "data": args.data.name,
            "import_seconds": import_seconds,
            "architectures": [
                {
                    "architecture": name,
                    "seconds": seconds,
                    "epochs": epochs,
                    "seconds_per_epoch": per_epoch,
                    "mae_ratio_to_naive": mase,
                }
                for name, seconds, epochs, per_epoch, mase in rows
            ],
        },
    )


if __name__ == "__main__":
    main()
