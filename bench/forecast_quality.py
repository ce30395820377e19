"""Forecast quality benchmark: honest walk-forward scores beside baselines and the tutorial pipeline.

    python bench/forecast_quality.py [CSV ...] [--folds N] [--epochs N]
    python bench/forecast_quality.py [CSV ...] --calibration-only [--architecture lstm]
    python bench/forecast_quality.py [CSV ...] --gate-only [--architecture lstm] [--horizon N]

For the bundled MSFT sample and every CSV given, prints one table in price
units (MAE, RMSE, MAPE, MAE ratio to naive, Hyndman-Koehler MASE,
directional accuracy beside the always-up rate, 90 % interval coverage):

- SimpleRNN, LSTM and GRU scored by the walk-forward backtest of
  `training.backtest` (everything refitted inside each fold);
- the naive, drift and ridge baselines on the same backtest windows;
- the tutorial pipeline: MinMax scaling of price levels fitted on all rows,
  a shuffled random train/test split, scored on its shuffled test rows;
- the same tutorial model scored honestly: chronological split, scaler
  fitted on the training rows only, scored on the later rows.

The last two rows differ only in the split and where the scaler is fitted,
and both are scored on the same chronological test windows (the last 20 %
of rows), so the gap between them is what leakage does to the reported error.

Then a calibration table: the same network backtested twice on the same
folds and test windows, once with the leaky calibration (early stopping and
conformal widths on the same validation windows, `calibration="shared"`) and
once with the honest one (disjoint blocks, the default), with 90 % coverage,
the Winkler score of the 90 % band against the training part's empirical
return-quantile band, the Diebold-Mariano p-values against naive, and the
coverage of the alternative calibration on earlier folds' out-of-sample
residuals. `--calibration-only` prints just that table.

`--gate-only` prints the promotion gate's view of one network per CSV (the
backtest of the served procedure): each one-sided DM p-value on |log error|
(what the gate reads) beside the same test in price units, the ratio to
naive both ways, the minimum detectable effect (the edge in mean |log error|
over naive found with 80 % power at the first attempt's level, and as a
share of naive's loss), whether the band covers as served, and the verdict.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from harness import add_json_option, write_json

from training import evaluation, features
from training.backtest import walk_forward
from training.baselines import BASELINES
from training.config import TrainConfig
from training.data import load_prices
from training.features import WindowSpec

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample" / "msft.csv"
ARCHITECTURES = {"SimpleRNN": "simple_rnn", "LSTM": "lstm", "GRU": "gru"}
# Defaults sized to finish the sample in a few minutes on two CPU cores.
DEFAULT_FOLDS = 3
DEFAULT_EPOCHS = 8
DEFAULT_UNITS = 32
DEFAULT_WINDOW = 40
DEFAULT_PATIENCE = 3
DEFAULT_BATCH_SIZE = 128
# The tutorial pipeline as the popular LSTM stock tutorials write it: 60 days
# of closes in, MinMax on price levels, 80/20 split.
TUTORIAL_WINDOW = 60
TUTORIAL_TEST_FRACTION = 0.2
COLUMNS = ("MAE", "RMSE", "MAPE %", "ratio", "MASE", "dir. acc.", "up rate", "90% cov.", "windows")
GATE_COLUMNS = (
    "s1 log",
    "s1 $",
    "all log",
    "all $",
    "drift log",
    "drift $",
    "ridge log",
    "ratio log",
    "ratio $",
    "MDE",
    "MDE rel",
    "cov. ok",
    "promoted",
    "windows",
)
CALIBRATION_COLUMNS = (
    "90% cov.",
    "cov. f2+",
    "resid. f2+",
    "Winkler",
    "W. base",
    "W. ratio",
    "DM p s1",
    "DM p all",
    "ratio",
    "windows",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; every default is chosen to bound the runtime."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", nargs="*", type=Path, help="extra price CSVs (the MSFT sample is always included)")
    parser.add_argument("--folds", type=int, default=DEFAULT_FOLDS, help="walk-forward folds")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, help="maximum epochs per fit")
    parser.add_argument("--units", type=int, default=DEFAULT_UNITS, help="recurrent units")
    parser.add_argument("--window", type=int, default=DEFAULT_WINDOW, help="input rows of the backtested networks")
    parser.add_argument("--horizon", type=int, default=1, help="forecast steps")
    parser.add_argument("--patience", type=int, default=DEFAULT_PATIENCE, help="early-stopping patience")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    add_json_option(parser)
    parser.add_argument("--calibration-only", action="store_true", help="only the leaky vs honest calibration table")
    parser.add_argument("--gate-only", action="store_true", help="only the gate's p-values in log and price units")
    parser.add_argument("--architecture", default="lstm", help="network of the calibration and gate tables")
    return parser.parse_args(argv)


def row_from_metrics(metrics: dict[str, Any], coverage: float | None = None) -> dict[str, Any]:
    """One table row from a `training.evaluation.forecast_metrics` result."""
    return {
        "MAE": metrics["mae"],
        "RMSE": metrics["rmse"],
        "MAPE %": metrics["mape"],
        "ratio": metrics.get("mae_ratio_to_naive"),
        "MASE": metrics["mase"],
        "dir. acc.": metrics["directional_accuracy"],
        "up rate": metrics.get("always_up_rate"),
        "90% cov.": coverage,
        "windows": metrics["windows"],
    }


# The flags named after the TrainConfig field they set (`--folds` sets backtest_folds).
CONFIG_FLAGS = ("units", "epochs", "patience", "batch_size", "window", "horizon")


def train_config(args: argparse.Namespace, **choices: Any) -> TrainConfig:
    """The training settings given on the command line, with `choices` (architecture, calibration) on top."""
    flags = {name: getattr(args, name) for name in CONFIG_FLAGS}
    return TrainConfig(**flags, backtest_folds=args.folds, **choices)


def backtest_rows(frame: Any, args: argparse.Namespace) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Walk-forward rows for each architecture, then the baselines from the same folds."""
    rows: dict[str, dict[str, Any]] = {}
    reports: dict[str, Any] = {}
    for label, architecture in ARCHITECTURES.items():
        config = train_config(args, architecture=architecture)
        started = time.perf_counter()
        report = walk_forward(frame, config).report
        print(f"  {label}: {time.perf_counter() - started:.0f}s", file=sys.stderr, flush=True)
        reports[label] = report
        rows[label] = row_from_metrics(report["summary"]["model"], report["coverage"]["90"]["coverage"])
    # The baselines do not depend on the network, so any report's are the same.
    for name in BASELINES:
        rows[name] = row_from_metrics(report["summary"][name])
    return rows, reports


def tutorial_rows(frame: Any, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The tutorial LSTM with leakage (MinMax on all rows, shuffled split) and without."""
    from sklearn.model_selection import train_test_split

    from training.models import build_model

    spec = WindowSpec(
        features=("close",), label="close", window=TUTORIAL_WINDOW, horizon=args.horizon, transform="minmax"
    )
    values = frame[["close"]].to_numpy(dtype=np.float64)
    inputs, futures = features.make_windows(values, spec)
    indices = np.arange(len(inputs))

    shuffled_train, _ = train_test_split(indices, test_size=TUTORIAL_TEST_FRACTION, random_state=42)
    # Chronological: training windows' targets end before the first test row.
    split_row = round(len(values) * (1 - TUTORIAL_TEST_FRACTION))
    train_inputs, train_futures = features.make_windows(values[:split_row], spec)
    test_inputs, test_futures = features.make_windows(values[split_row - spec.window :], spec)

    variants = {
        # The scaler sees every row, test rows included, and test windows sit
        # between training windows that overlap them.
        # Scored on the same chronological windows as the honest variant,
        # most of which it trained on.
        "tutorial (leaky)": (
            features.fit_scaler(inputs, futures, spec),
            (inputs[shuffled_train], futures[shuffled_train]),
            (test_inputs, test_futures),
        ),
        "tutorial (honest)": (
            features.fit_scaler(train_inputs, train_futures, spec),
            (train_inputs, train_futures),
            (test_inputs, test_futures),
        ),
    }
    rows = {}
    for label, (scaler, (fit_inputs, fit_futures), (score_inputs, score_futures)) in variants.items():
        started = time.perf_counter()
        model = build_model("lstm", window=spec.window, feature_count=1, horizon=spec.horizon, units=args.units)
        model.fit(
            features.scale_inputs(fit_inputs, spec, scaler),
            features.scale_targets(fit_inputs, fit_futures, spec, scaler),
            epochs=args.epochs,
            batch_size=args.batch_size,
            shuffle=True,
            verbose=0,
        )
        outputs = model.predict(features.scale_inputs(score_inputs, spec, scaler), batch_size=1024, verbose=0)
        predicted = features.outputs_to_prices(score_inputs, outputs, spec, scaler)
        metrics = evaluation.forecast_metrics(score_futures, predicted, score_inputs[:, -1, 0])
        rows[label] = row_from_metrics(metrics)
        print(f"  {label}: {time.perf_counter() - started:.0f}s", file=sys.stderr, flush=True)
    return rows


def calibration_rows(frame: Any, args: argparse.Namespace) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """One network backtested with the leaky and the honest calibration on the same folds."""
    rows: dict[str, dict[str, Any]] = {}
    reports: dict[str, Any] = {}
    for label, calibration in (("leaky (shared)", "shared"), ("honest (disjoint)", "disjoint")):
        config = train_config(args, architecture=args.architecture, calibration=calibration)
        started = time.perf_counter()
        report = walk_forward(frame, config).report
        print(f"  {label}: {time.perf_counter() - started:.0f}s", file=sys.stderr, flush=True)
        reports[label] = report
        evidence, sharpness = report["evidence"], report["sharpness"]["90"]
        alternatives = report["coverage_alternatives"]
        rows[label] = {
            "90% cov.": report["coverage"]["90"]["coverage"],
            "cov. f2+": alternatives["disjoint_blocks"]["coverage_90"],
            "resid. f2+": alternatives["walk_forward_residuals"]["coverage_90"],
            "Winkler": sharpness["winkler_model"],
            "W. base": sharpness["winkler_empirical_baseline"],
            "W. ratio": sharpness["ratio_to_baseline"],
            "DM p s1": evidence["vs_naive_step_1"]["p_value"],
            "DM p all": evidence["vs_naive_pooled"]["p_value"],
            "ratio": report["summary"]["model"]["mae_ratio_to_naive"],
            "windows": report["summary"]["model"]["windows"],
        }
    return rows, reports


def gate_row(frame: Any, args: argparse.Namespace, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The gate's p-values in log and price units, the MDE and the verdict for one backtested network."""
    from training.gate import GateSettings, decide

    config = train_config(args, architecture=args.architecture)
    run = walk_forward(frame, config)
    report = run.report
    candidate = {"version": 1, "horizon": args.horizon, "data": {"sha256": name}, "backtest": report}
    decision = decide(candidate, None, GateSettings())
    evidence, price = report["evidence"], report["evidence"]["price_units"]
    detectable = decision.evidence["minimum_detectable_effect"] or {}
    row = {
        "s1 log": evidence["vs_naive_step_1"]["p_value"],
        "s1 $": price["vs_naive_step_1"]["p_value"],
        "all log": evidence["vs_naive_pooled"]["p_value"],
        "all $": price["vs_naive_pooled"]["p_value"],
        "drift log": evidence["vs_drift_pooled"]["p_value"],
        "drift $": price["vs_drift_pooled"]["p_value"],
        "ridge log": evidence["vs_ridge_pooled"]["p_value"],
        "ratio log": evidence["ratio_to_naive"],
        "ratio $": report["summary"]["model"]["mae_ratio_to_naive"],
        "MDE": detectable.get("mean_abs_log_error"),
        "MDE rel": detectable.get("relative"),
        "cov. ok": evidence["coverage_90"]["within"],
        "promoted": decision.promoted,
        "windows": evidence["vs_naive_pooled"]["windows"],
    }
    return row, {"report": report, "decision": decision.to_json()}


def format_cell(column: str, value: Any) -> str:
    """Fixed-width text for one cell ("-" where a figure does not apply)."""
    if value is None:
        return "-"
    if column == "windows":
        return f"{value:d}"
    if column in ("dir. acc.", "90% cov.", "up rate", "cov. f2+", "resid. f2+"):
        return f"{value:.1%}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if column in ("MDE", "MDE rel"):
        return f"{value:.2e}" if column == "MDE" else f"{value:.1%}"
    if column in ("MASE", "ratio", "W. ratio", "DM p s1", "DM p all") or column in GATE_COLUMNS:
        return f"{value:.4f}"
    if column == "MAPE %":
        return f"{value:.3f}"
    return f"{value:.4g}"


def format_table(title: str, rows: dict[str, dict[str, Any]], columns: tuple[str, ...] = COLUMNS) -> str:
    """A plain-text table, one row per model."""
    width = max(len(name) for name in rows) + 2
    lines = [title, "model".ljust(width) + "".join(column.rjust(11) for column in columns)]
    for name, row in rows.items():
        lines.append(name.ljust(width) + "".join(format_cell(column, row[column]).rjust(11) for column in columns))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark over the sample and the given CSVs; print one table each."""
    args = parse_args(argv)
    results = {}
    for path in [SAMPLE, *args.csv]:
        clean = load_prices(path)
        frame = clean.frame
        print(f"{path.name}: {len(frame)} rows", file=sys.stderr, flush=True)
        started = time.perf_counter()
        if args.gate_only:
            row, gate = gate_row(frame, args, path.name)
            title = (
                f"{path.name}: gate, {args.architecture}, {gate['report']['protocol']['folds']} folds x "
                f"{gate['report']['protocol']['stride']} rows from {gate['report']['protocol']['test_start']}, window "
                f"{args.window}, horizon {args.horizon}; one-sided DM p-values vs naive (step 1, pooled), drift and "
                f"ridge (pooled), |log error| beside price units ({time.perf_counter() - started:.0f}s)"
            )
            print(format_table(title, {args.architecture: row}, GATE_COLUMNS) + "\n", flush=True)
            results[path.name] = {"gate": row, "gate_decision": gate["decision"]}
            continue
        calibration, calibration_reports = calibration_rows(frame, args)
        protocol = next(iter(calibration_reports.values()))["protocol"]
        title = (
            f"{path.name}: calibration, {args.architecture}, backtest {protocol['folds']} folds x "
            f"{protocol['stride']} rows from {protocol['test_start']} to {protocol['test_end']}, window "
            f"{args.window}, horizon {args.horizon}; same folds and test windows in both rows "
            f"({time.perf_counter() - started:.0f}s)"
        )
        print(format_table(title, calibration, CALIBRATION_COLUMNS) + "\n", flush=True)
        if args.calibration_only:
            results[path.name] = {"calibration": calibration, "calibration_backtests": calibration_reports}
            continue
        started = time.perf_counter()
        rows, reports = backtest_rows(frame, args)
        rows.update(tutorial_rows(frame, args))
        protocol = next(iter(reports.values()))["protocol"]
        first_test = next(iter(reports.values()))["folds"][0]["test_start"]
        title = (
            f"{path.name}: {frame['date'].iloc[0]:%Y-%m-%d} to {frame['date'].iloc[-1]:%Y-%m-%d}, "
            f"{len(frame)} rows; backtest {protocol['folds']} folds x {protocol['stride']} rows from {first_test}, "
            f"window {args.window}, horizon {args.horizon}, {args.units} units, <= {args.epochs} epochs; "
            f"tutorial window {TUTORIAL_WINDOW}, {TUTORIAL_TEST_FRACTION:.0%} test "
            f"({time.perf_counter() - started:.0f}s)"
        )
        print(format_table(title, rows) + "\n", flush=True)
        results[path.name] = {
            "rows": rows,
            "backtests": reports,
            "calibration": calibration,
            "calibration_backtests": calibration_reports,
        }
    write_json(args.json, sys.argv if argv is None else ["bench/forecast_quality.py", *argv], {"results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
