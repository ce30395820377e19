"""Command line: `stockcast-train` (or `python -m training`).

    stockcast-train train --data data/sample/msft.csv --name msft
    stockcast-train describe --data data/sample/msft.csv --charts charts/
    stockcast-train list
    stockcast-train show msft 1
    stockcast-train report msft 1 --out msft-v1.png

Every command is a thin shell around a library function; errors the user can
fix are printed as `error: <message>` with exit status 2, never a traceback.
See docs/design.md, "Data path".
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TextIO, get_args, get_origin

from pydantic.fields import FieldInfo

from training.errors import StockcastError
from training.files import check_name, sha256_of
from training.store import DEFAULT_ROOT

EXIT_OK = 0
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
PROGRESS_WIDTH = 24
# The text fields that name CSV columns, normalised as the header is.
COLUMN_FIELDS = ("features", "label")


def _column_name(text: str) -> str:
    from training.data import normalise_column_name

    return normalise_column_name(text)


def _comma_list(text: str) -> tuple[str, ...]:
    return tuple(_column_name(part) for part in text.split(",") if part.strip())


def _flag_kind(name: str, annotation: Any) -> dict[str, Any]:
    """argparse keywords for a TrainConfig field's type.

    Text values name columns, written as in the CSV header ("Adj Close"), so
    they are normalised the way `training.data` normalises the header.
    """
    if get_origin(annotation) is Literal:
        return {"choices": get_args(annotation)}
    if annotation is bool:
        # None when absent, so that only what the user typed overrides TrainConfig.
        return {"action": "store_true", "default": None}
    if annotation in (int, float):
        return {"type": annotation}
    if annotation is str:
        # A calendar code (XKRX, 24/7) is typed as exchange_calendars spells it.
        return {"type": _column_name} if name in COLUMN_FIELDS else {"type": str}
    if get_origin(annotation) is tuple and _base_type(get_args(annotation)[0]) is str:
        return {"type": _comma_list, "metavar": name.upper().replace("_", "-").rstrip("S") + ",..."}
    raise TypeError(f"TrainConfig.{name}: no command-line flag for type {annotation!r}; add one in _flag_kind")


def _base_type(annotation: Any) -> Any:
    return get_args(annotation)[0] if get_origin(annotation) is Annotated else annotation


def _flag_help(info: FieldInfo) -> str:
    from training.config import bounds_text

    default = ",".join(map(str, info.default)) if isinstance(info.default, tuple) else info.default
    details = [f"default {default}" if info.annotation is not bool else "off by default"]
    if bounds := bounds_text(info):
        details.append(bounds)
    return f"{(info.description or '').rstrip('.')} ({'; '.join(details)})"


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per public TrainConfig field: `--learning-rate` for `learning_rate`, its help and choices."""
    from training.config import public_fields

    for name, info in public_fields().items():
        parser.add_argument(f"--{name.replace('_', '-')}", help=_flag_help(info), **_flag_kind(name, info.annotation))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with its five subcommands."""
    parser = argparse.ArgumentParser(prog="stockcast-train", description="Train and inspect stockcast models.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train a new version from a price CSV and gate it")
    train.add_argument(
        "--data", required=True, type=Path, help="OHLCV CSV (Date,Open,High,Low,Close[,Adj Close],Volume)"
    )
    train.add_argument("--name", help="model name (default: the CSV's file name without extension)")
    add_config_flags(train)
    train.add_argument(
        "--mask-outliers",
        "--drop-outliers",
        dest="mask_outliers",
        action="store_true",
        help="leave every window touching an outlier row out of training and scoring (rows are never deleted)",
    )
    train.add_argument("--models-dir", type=Path, default=DEFAULT_ROOT, help="model store folder")
    add_store_url_flag(train)

    describe = commands.add_parser("describe", help="print the data report of a price CSV")
    describe.add_argument("--data", required=True, type=Path, help="OHLCV CSV")
    describe.add_argument("--json", action="store_true", help="print the report as JSON")
    describe.add_argument("--charts", type=Path, metavar="DIR", help="also write PNG charts into DIR")
    describe.add_argument(
        "--price-scale",
        choices=["auto", "log", "linear"],
        default="auto",
        help="price axis of the history chart (auto: log when prices span more than 20x)",
    )
    describe.add_argument(
        "--mask-outliers",
        "--drop-outliers",
        dest="mask_outliers",
        action="store_true",
        help="report as training with --mask-outliers would see the data",
    )
    describe.add_argument(
        "--calendar",
        help="report how the rows fit this trading calendar, as training on it would (XNYS, XKRX, 24/7, ...)",
    )

    listing = commands.add_parser("list", help="list stored models, versions and aliases")
    listing.add_argument("--models-dir", type=Path, default=DEFAULT_ROOT)
    add_store_url_flag(listing)

    show = commands.add_parser("show", help="print a version's metadata.json")
    show.add_argument("name")
    show.add_argument("version", nargs="?", help="version number or alias (default: champion, else newest)")
    show.add_argument("--models-dir", type=Path, default=DEFAULT_ROOT)
    add_store_url_flag(show)

    report = commands.add_parser("report", help="write a version's report chart as PNG")
    report.add_argument("name")
    report.add_argument("version", type=int)
    report.add_argument("--out", required=True, type=Path, help="PNG file to write")
    report.add_argument("--models-dir", type=Path, default=DEFAULT_ROOT)
    add_store_url_flag(report)
    return parser


def add_store_url_flag(parser: argparse.ArgumentParser) -> None:
    """`--store-url`: the store in object storage, as the service's STOCKCAST_STORE_URL (its default) says."""
    parser.add_argument(
        "--store-url",
        default=os.environ.get("STOCKCAST_STORE_URL") or None,
        help="s3://bucket/prefix: the store in S3-compatible object storage (AWS_* variables for the endpoint and"
        " credentials), with --models-dir as the local cache (default: STOCKCAST_STORE_URL, else the folder)",
    )


# Train ---------------------------------------------------------------------


def progress_line(epoch: int, epochs: int, logs: dict[str, float], elapsed: float) -> str:
    """One line per epoch: `epoch  3/30 [#####-----] loss 0.9821 val_loss 1.0132 4.1s`."""
    filled = round(PROGRESS_WIDTH * epoch / epochs) if epochs else PROGRESS_WIDTH
    bar = "#" * filled + "-" * (PROGRESS_WIDTH - filled)
    width = len(str(epochs))
    parts = [f"epoch {epoch:>{width}}/{epochs} [{bar}]"]
    for key in ("loss", "val_loss"):
        if key in logs:
            parts.append(f"{key} {logs[key]:.4f}")
    parts.append(f"{elapsed:6.1f}s")
    return "  ".join(parts)


def _metric(value: Any, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def metrics_table(metrics: dict[str, Any]) -> str:
    """The model's test metrics beside the naive and drift baselines."""
    header = f"{'':8}{'MAE':>12}{'RMSE':>12}{'MAPE %':>9}{'ratio':>8}{'MASE':>8}{'direction':>11}{'up':>7}"
    lines = [header]
    from training.baselines import BASELINES

    for row in ("model", *BASELINES):
        values = metrics.get(row)
        if not values:
            continue
        lines.append(
            f"{row:8}{_metric(values['mae'], 4):>12}{_metric(values['rmse'], 4):>12}"
            f"{_metric(values['mape'], 2):>9}{_metric(values.get('mae_ratio_to_naive'), 3):>8}"
            f"{_metric(values['mase'], 3):>8}{_metric(values['directional_accuracy'], 3):>11}"
            f"{_metric(values.get('always_up_rate'), 3):>7}"
        )
    return "\n".join(lines)


def _config_from_args(args: argparse.Namespace) -> Any:
    from training.config import TrainConfig, public_fields

    # Only what the user typed overrides TrainConfig, the one home of the defaults.
    chosen = {name: getattr(args, name) for name in public_fields() if getattr(args, name) is not None}
    return TrainConfig(**chosen)


def command_train(args: argparse.Namespace, out: TextIO) -> int:
    """Load and check the CSV, train a version, print its metrics and the gate's decision."""
    from training.data import CleaningSettings, fit_calendar, load_prices
    from training.fitting import Progress, TrainingRun
    from training.promotion import train_and_promote
    from training.remote_store import open_model_store

    config = _config_from_args(args)
    name = check_name(args.name if args.name is not None else args.data.stem)
    required = tuple(dict.fromkeys((*config.features, config.label)))
    # The outlier rule is fitted on the split's training rows, whatever the fractions.
    cleaning = CleaningSettings(
        mask_outliers=args.mask_outliers,
        outlier_fit_fraction=1 - config.validation_fraction - config.test_fraction,
    )
    # Fitted to the calendar here too, so the counts below include its dropped rows and a misfit stops first.
    clean = fit_calendar(load_prices(args.data, required=required, settings=cleaning), config.calendar)
    source = {"name": args.data.name, "path": str(args.data.resolve()), "sha256": sha256_of(args.data)}
    dropped = sum(clean.dropped.values())
    print(
        f"data: {args.data.name}, {len(clean.frame):,d} rows kept of {clean.rows_read:,d} "
        f"({dropped} dropped, {len(clean.outliers)} outlier(s) {'masked' if args.mask_outliers else 'kept'})",
        file=out,
    )
    print(
        f"training {config.architecture} ({config.layers}x{config.units} units, window {config.window}, "
        f"horizon {config.horizon}, transform {config.transform}) as '{name}'",
        file=out,
    )
    started = time.perf_counter()

    def on_epoch(epoch: int, epochs: int, logs: dict[str, float]) -> None:
        print(progress_line(epoch, epochs, logs, time.perf_counter() - started), file=out, flush=True)

    def on_fold(done: int, total: int, report: dict[str, Any]) -> None:
        mase = report.get("model", {}).get("mae_ratio_to_naive")
        print(
            f"backtest fold {done}/{total}: model MAE ratio to naive {_metric(mase, 4)} "
            f"({time.perf_counter() - started:.1f}s)",
            file=out,
            flush=True,
        )

    if config.backtest_folds:
        print(f"then a walk-forward backtest over {config.backtest_folds} folds (the gate judges it)", file=out)
    store = open_model_store(args.models_dir, args.store_url)
    run = TrainingRun(name=name, clean=clean, source=source, config=config)
    outcome, decision = train_and_promote(run, store, Progress(on_epoch=on_epoch, on_fold=on_fold))
    metadata = outcome.metadata
    test = metadata["split"]["test"]
    print(
        f"stored {name} v{outcome.version} in {store.version_dir(name, outcome.version)} "
        f"({outcome.epochs_run} epoch(s), {outcome.seconds:.1f}s)",
        file=out,
    )
    windows = metadata["metrics"]["model"]["windows"]
    print(f"test part {test['start']} to {test['end']}, {windows} windows, price units:", file=out)
    print(metrics_table(metadata["metrics"]), file=out)
    backtest = metadata.get("backtest")
    if backtest:
        protocol = backtest.get("protocol", {})
        print(
            f"walk-forward backtest, {protocol.get('folds', '?')} folds, "
            f"{backtest['summary']['model']['windows']} windows, price units:",
            file=out,
        )
        print(metrics_table(backtest["summary"]), file=out)
        coverage = ", ".join(
            f"{level}% -> {figures['coverage']:.1%} (mean width {figures['mean_width']:.4g})"
            for level, figures in backtest.get("coverage", {}).items()
        )
        print(f"interval coverage in the backtest: {coverage}", file=out)
    verdict = "promoted to champion" if decision.promoted else "not promoted"
    print(f"gate: {verdict}: {decision.reason}", file=out)
    return EXIT_OK


# Describe ------------------------------------------------------------------


def command_describe(args: argparse.Namespace, out: TextIO) -> int:
    """Print the data report, as text or JSON, and optionally write the charts."""
    from training.calendars import check_calendar
    from training.data import CleaningSettings, fit_calendar, load_prices
    from training.data_report import data_report, render_charts, render_report_text

    clean = load_prices(args.data, settings=CleaningSettings(mask_outliers=args.mask_outliers))
    if args.calendar is not None:
        clean = fit_calendar(clean, check_calendar(args.calendar))
    report = data_report(clean)
    charts: list[Path] = []
    if args.charts is not None:
        log_scale = {"auto": None, "log": True, "linear": False}[args.price_scale]
        charts = render_charts(clean, args.charts, log_scale=log_scale)
    if args.json:
        print(json.dumps({**report, "charts": [str(path) for path in charts]}, indent=2), file=out)
    else:
        print(f"{args.data}", file=out)
        print(render_report_text(report), file=out)
        for path in charts:
            print(f"wrote {path}", file=out)
    return EXIT_OK


# Store ---------------------------------------------------------------------


def _mase(metadata: dict[str, Any]) -> str:
    from training.gate import headline_ratio

    mase, _basis = headline_ratio(metadata)
    return _metric(mase, 3)


def command_list(args: argparse.Namespace, out: TextIO) -> int:
    """Every model with its versions, their headline figures and aliases."""
    from training.remote_store import open_model_store

    store = open_model_store(args.models_dir, args.store_url)
    names = store.model_names()
    if not names:
        print(f"no models in {store.root}", file=out)
        return EXIT_OK
    for name in names:
        aliases = store.aliases(name)
        by_version: dict[int, list[str]] = {}
        for alias, version in sorted(aliases.items()):
            by_version.setdefault(version, []).append(alias)
        print(name, file=out)
        print(f"  {'version':>7}  {'created':25} {'architecture':12} {'window':>6} {'ratio':>7}  aliases", file=out)
        for version in store.versions(name):
            tags = ",".join(by_version.get(version, []))
            try:
                metadata = store.read_metadata(name, version)
            except StockcastError as error:
                print(f"  {version:>7}  broken: {error}", file=out)
                continue
            line = (
                f"  {version:>7}  {metadata['created_at']:25} {metadata['architecture']:12} "
                f"{metadata['window']:>6} {_mase(metadata):>7}  {tags}"
            )
            print(line.rstrip(), file=out)
    return EXIT_OK


def command_show(args: argparse.Namespace, out: TextIO) -> int:
    """Print one version's metadata as JSON (a number, an alias, or the default version)."""
    from training.remote_store import open_model_store

    store = open_model_store(args.models_dir, args.store_url)
    if args.version is None:
        version = store.resolve(args.name)
    elif args.version.isdigit():
        version = store.resolve(args.name, version=int(args.version))
    else:
        version = store.resolve(args.name, alias=args.version)
    print(json.dumps(store.read_metadata(args.name, version), indent=2, sort_keys=True), file=out)
    return EXIT_OK


def command_report(args: argparse.Namespace, out: TextIO) -> int:
    """Write the version report chart drawn by training.version_report."""
    from training.remote_store import open_model_store
    from training.version_report import render_version_report

    store = open_model_store(args.models_dir, args.store_url)
    store.resolve(args.name, version=args.version)
    png = render_version_report(store, args.name, args.version)
    args.out.write_bytes(png)
    print(f"wrote {args.out} ({len(png):,d} bytes)", file=out)
    return EXIT_OK


COMMANDS = {
    "train": command_train,
    "describe": command_describe,
    "list": command_list,
    "show": command_show,
    "report": command_report,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status (0 ok, 2 a problem the user can fix)."""
    # TensorFlow's C++ start-up notices (oneDNN, CPU features) drown the
    # progress lines; real errors still surface as Python exceptions.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args, sys.stdout)
    except StockcastError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as error:
        # Unreadable input or unwritable output (a folder given as a file, no permission).
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
