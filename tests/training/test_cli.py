"""The command line: train, describe, list, show, report, and clean errors with exit status 2."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Literal, get_args, get_origin

import numpy as np
import pandas as pd
import pytest

from training import cli
from training.artifact import load_version
from training.calendars import is_session
from training.config import ARCHITECTURES, TrainConfig, bounds_text, public_fields
from training.data import load_prices
from training.models import RECURRENT_LAYERS
from training.store import METADATA_FILE, MODEL_FILE, ModelStore

pytestmark = pytest.mark.tf

TINY = ["--window", "10", "--units", "4", "--epochs", "2", "--batch-size", "32", "--patience", "1"]
# For trainings whose backtest is not the point (the first one's output is checked fold by fold).
NO_BACKTEST = ["--backtest-folds", "0"]


def run_cli(*argv: str | Path) -> tuple[int, str, str]:
    """Run the command line in-process; returns exit status, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main([str(arg) for arg in argv])
    return status, out.getvalue(), err.getvalue()


def samsung_like_yahoo_export(rows: int = 700, seed: int = 5) -> str:
    """A Yahoo Finance style KRW export: prices 50,000-80,000 in 100-won ticks, null rows on XKRX holidays."""
    rng = np.random.default_rng(seed)
    days = pd.bdate_range("2021-01-04", periods=rows)
    centre = np.log(65_000)
    log_price = np.empty(rows)
    log_price[0] = centre
    for index in range(1, rows):
        # Mean-reverting so the series stays in a Samsung-like band.
        log_price[index] = log_price[index - 1] + 0.03 * (centre - log_price[index - 1]) + rng.normal(0, 0.015)
    close = np.round(np.exp(log_price), -2)
    opening = np.round(np.r_[close[0], close[:-1]] * np.exp(rng.normal(0, 0.004, rows)), -2)
    high = np.maximum(opening, close) + 100 * rng.integers(0, 8, rows)
    low = np.minimum(opening, close) - 100 * rng.integers(0, 8, rows)
    volume = rng.integers(8_000_000, 25_000_000, rows)
    holidays = set(np.flatnonzero(~is_session(days.to_numpy().astype("datetime64[D]"), "XKRX")).tolist())
    lines = ["Date,Open,High,Low,Close,Adj Close,Volume"]
    for index, day in enumerate(days):
        if index in holidays:
            lines.append(f"{day:%Y-%m-%d},null,null,null,null,null,null")
            continue
        adjusted = close[index] * 0.962
        lines.append(
            f"{day:%Y-%m-%d},{opening[index]:.1f},{high[index]:.1f},{low[index]:.1f},"
            f"{close[index]:.1f},{adjusted:.6f},{volume[index]}"
        )
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def trained_cli(small_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, str]:
    """`stockcast-train train` run once on the sample slice: models folder, status, stdout."""
    models = tmp_path_factory.mktemp("cli") / "models"
    status, out, err = run_cli("train", "--data", small_csv, "--name", "msft", *TINY, "--models-dir", models)
    assert err == "", err
    return models, status, out


def test_train_writes_version_one_with_model_and_scaler(trained_cli: tuple[Path, int, str]) -> None:
    models, status, _ = trained_cli
    assert status == 0
    folder = models / "msft" / "1"
    assert (folder / MODEL_FILE).stat().st_size > 0
    metadata = json.loads((folder / METADATA_FILE).read_text())
    assert metadata["scaler"]["kind"] == "standard"
    assert len(metadata["scaler"]["feature_center"]) == len(metadata["features"]) == 5
    assert metadata["data"]["name"] == "msft_small.csv"
    assert len(metadata["data"]["sha256"]) == 64
    assert metadata["hyperparameters"]["units"] == 4 and metadata["window"] == 10


def test_train_prints_progress_version_metrics_and_gate(trained_cli: tuple[Path, int, str]) -> None:
    _, _, out = trained_cli
    lines = out.splitlines()
    assert lines[0] == "data: msft_small.csv, 600 rows kept of 600 (0 dropped, 0 outlier(s) kept)"
    assert any(line.startswith("epoch 1/2 [############------------]  loss ") for line in lines)
    assert "stored msft v1 in " in out
    names = (["model"], ["naive"], ["drift"], ["ridge"])
    table_rows = [line.split()[0] for line in lines if line.split()[:1] in names]
    # The test-part table, then the walk-forward backtest's with the ridge baseline.
    assert table_rows == ["model", "naive", "drift", "model", "naive", "drift", "ridge"]
    assert any(line.startswith("backtest fold 3/3: model MAE ratio to naive ") for line in lines)
    assert any(line.startswith("interval coverage in the backtest: 80% -> ") for line in lines)
    assert lines[-1].startswith(
        ("gate: promoted to champion: beats naive and drift with evidence", "gate: not promoted: ")
    )


def test_training_again_makes_version_two(trained_cli: tuple[Path, int, str], small_csv: Path) -> None:
    models, _, _ = trained_cli
    gru = [*TINY, *NO_BACKTEST, "--architecture", "gru"]
    status, out, _ = run_cli("train", "--data", small_csv, "--name", "msft", *gru, "--models-dir", models)
    assert status == 0
    assert "stored msft v2 " in out
    assert ModelStore(models).versions("msft") == [1, 2]


def test_list_shows_models_versions_and_aliases(trained_cli: tuple[Path, int, str]) -> None:
    models, _, _ = trained_cli
    store = ModelStore(models)
    store.set_alias("msft", "staging", 1, reason="test")
    status, out, _ = run_cli("list", "--models-dir", models)
    assert status == 0
    lines = out.splitlines()
    assert lines[0] == "msft"
    version_one = next(line for line in lines if line.split()[:1] == ["1"])
    assert "lstm" in version_one and "staging" in version_one


def test_list_reports_a_broken_version_instead_of_failing(tmp_path: Path) -> None:
    (tmp_path / "demo" / "1").mkdir(parents=True)
    (tmp_path / "demo" / "1" / METADATA_FILE).write_text("{broken")
    status, out, _ = run_cli("list", "--models-dir", tmp_path)
    assert status == 0
    assert "broken: demo v1: metadata.json is unreadable" in out


def test_list_of_an_empty_store(tmp_path: Path) -> None:
    assert run_cli("list", "--models-dir", tmp_path)[:2] == (0, f"no models in {tmp_path}\n")


def test_show_prints_the_metadata_json(trained_cli: tuple[Path, int, str]) -> None:
    models, _, _ = trained_cli
    status, out, _ = run_cli("show", "msft", "1", "--models-dir", models)
    assert status == 0
    assert json.loads(out) == json.loads((models / "msft" / "1" / METADATA_FILE).read_text())


def test_show_by_alias(trained_cli: tuple[Path, int, str]) -> None:
    models, _, _ = trained_cli
    ModelStore(models).set_alias("msft", "pinned", 1)
    status, out, _ = run_cli("show", "msft", "pinned", "--models-dir", models)
    assert status == 0 and json.loads(out)["version"] == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["show", "ghost"], "error: unknown model 'ghost'"),
        (["show", "msft", "99"], "error: model 'msft' has no version 99"),
        (["show", "msft", "nosuch"], "error: model 'msft' has no alias 'nosuch'"),
    ],
)
def test_show_errors_exit_2_with_the_message(trained_cli: tuple[Path, int, str], argv: list[str], message: str) -> None:
    models, _, _ = trained_cli
    status, out, err = run_cli(*argv, "--models-dir", models)
    assert status == 2
    assert err.startswith(message)
    assert out == ""


def test_report_writes_the_version_png(trained_cli: tuple[Path, int, str], tmp_path: Path) -> None:
    pytest.importorskip("training.version_report")
    models, _, _ = trained_cli
    out_file = tmp_path / "report.png"
    status, out, err = run_cli("report", "msft", "1", "--out", out_file, "--models-dir", models)
    assert (status, err) == (0, "")
    assert out_file.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert out.startswith(f"wrote {out_file}")


def test_report_of_a_missing_version_exits_2(trained_cli: tuple[Path, int, str], tmp_path: Path) -> None:
    models, _, _ = trained_cli
    status, _, err = run_cli("report", "msft", "99", "--out", tmp_path / "x.png", "--models-dir", models)
    assert status == 2 and err.startswith("error: model 'msft' has no version 99")


def test_describe_prints_the_report(small_csv: Path) -> None:
    status, out, _ = run_cli("describe", "--data", small_csv)
    assert status == 0
    assert "rows read      600" in out
    assert "2015-06-24 to 2017-11-10" in out or "to 2017-11-10" in out
    assert "close_log_return" in out


def test_describe_with_a_calendar_reports_what_training_on_it_would_drop(tmp_path: Path) -> None:
    data = tmp_path / "005930.KS.csv"
    data.write_text(samsung_like_yahoo_export().replace(",null,null,null,null,null,null", ",1,1,1,1,1,0"))
    status, out, _ = run_cli("describe", "--data", data, "--calendar", "XKRX")
    assert status == 0
    assert "calendar       XKRX: 34 zero-volume row(s) on closed days dropped (2021-02-11, 2021-02-12, " in out
    status, _, err = run_cli("describe", "--data", data, "--calendar", "24/7")
    assert status == 2 and "calendar '24/7' forecasts every day, but the data has no row on a Saturday" in err


def test_describe_json_and_charts(small_csv: Path, tmp_path: Path) -> None:
    status, out, _ = run_cli("describe", "--data", small_csv, "--json", "--charts", tmp_path / "charts")
    report = json.loads(out)
    assert status == 0
    assert report["rows_kept"] == 600 and report["date_range"]["end"] == "2017-11-10"
    assert [Path(path).name for path in report["charts"]] == ["price_history.png", "histograms.png", "log_returns.png"]
    assert all(Path(path).is_file() for path in report["charts"])


def test_a_bad_csv_exits_2_with_the_message_and_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("Date,Open,High,Low,Close,Volume\n2020-01-02,1,1,1,1,1\n2020-01-03,1,1,1,abc,1\n")
    for command in (["train", "--models-dir", str(tmp_path / "models")], ["describe"]):
        status, out, err = run_cli(*command, "--data", bad)
        assert status == 2
        assert err == "error: column 'close' has values that are not numbers on CSV line(s) 3 (e.g. 'abc')\n"
        assert "Traceback" not in err and out == ""
    assert not (tmp_path / "models" / "bad").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--window", "1"], "error: window: Input should be greater than or equal to 2, got 1\n"),
        (["--seed", "-1"], "error: seed: Input should be greater than or equal to 0, got -1\n"),
        (["--seed", str(10**30)], f"error: seed: Input should be less than or equal to 4294967295, got {10**30}\n"),
        (
            ["--backtest-stride", "1000000"],
            "error: backtest_stride: Input should be less than or equal to 10000, got 1000000\n",
        ),
        (["--epochs", "0"], "error: epochs: Input should be greater than or equal to 1, got 0\n"),
        (["--features", "close,volume", "--label", "Adj Close"], "error: label 'adj_close' must be one of"),
        (["--name", "../up"], "error: invalid model name '../up'"),
        (["--window", "300"], "error: not enough rows: need at least 2067 clean rows"),
        (["--features", "open,close,OpenInt"], "error: feature column(s) ['openint'] are not supported"),
    ],
)
def test_bad_settings_exit_2_with_the_message(small_csv: Path, tmp_path: Path, extra: list[str], message: str) -> None:
    status, _, err = run_cli("train", "--data", small_csv, "--models-dir", tmp_path, *extra)
    assert status == 2
    assert err.startswith(message), err
    assert ModelStore(tmp_path).model_names() == []


def test_missing_data_file_exits_2(tmp_path: Path) -> None:
    status, _, err = run_cli("describe", "--data", tmp_path / "absent.csv")
    assert status == 2 and err.startswith("error: file not found")


def test_a_folder_given_as_data_exits_2(tmp_path: Path) -> None:
    status, _, err = run_cli("describe", "--data", tmp_path)
    assert status == 2 and err.startswith("error: ")


def train_flags() -> dict[str, argparse.Action]:
    """The `train` subcommand's options by destination."""
    commands = next(action for action in cli.build_parser()._actions if action.dest == "command")
    train = commands.choices["train"]  # type: ignore[index]
    return {action.dest: action for action in train._actions}


def test_every_hyper_parameter_is_a_flag_with_its_help_and_bounds() -> None:
    flags = train_flags()
    for name, info in public_fields().items():
        flag = flags[name]
        assert flag.option_strings == [f"--{name.replace('_', '-')}"]
        assert flag.default is None  # so that TrainConfig's default applies
        assert info.description is not None and info.description.rstrip(".") in (flag.help or "")
        assert bounds_text(info) in (flag.help or "")
        if get_origin(info.annotation) is Literal:
            assert flag.choices == get_args(info.annotation)
    assert set(public_fields()) <= set(flags)
    assert "interval_levels" not in flags


def test_flags_reach_the_config() -> None:
    typed = ["--features", "Open,Adj Close", "--label", "Adj Close", "--learning-rate", "0.01", "--seed", "7"]
    typed += ["--architecture", "gru", "--backtest-refit", "once", "--shuffle-labels"]
    args = cli.build_parser().parse_args(["train", "--data", "x.csv", *typed])
    config = cli._config_from_args(args)
    assert config == TrainConfig(
        features=("open", "adj_close"),
        label="adj_close",
        learning_rate=0.01,
        architecture="gru",
        backtest_refit="once",
        shuffle_labels=True,
        seed=7,
    )


def test_every_architecture_has_a_keras_layer() -> None:
    assert sorted(RECURRENT_LAYERS) == sorted(ARCHITECTURES)


def test_progress_line() -> None:
    line = cli.progress_line(3, 12, {"loss": 0.98765, "val_loss": 1.2, "mae": 0.5}, 4.04)
    assert line == "epoch  3/12 [######------------------]  loss 0.9877  val_loss 1.2000     4.0s"


def test_krw_yahoo_export_trains_and_forecasts_near_the_last_close(tmp_path: Path) -> None:
    data = tmp_path / "005930.KS.csv"
    data.write_text(samsung_like_yahoo_export())
    models = tmp_path / "models"
    status, out, err = run_cli(
        "train", "--data", data, *TINY, *NO_BACKTEST, "--calendar", "XKRX", "--models-dir", models
    )
    assert (status, err) == (0, "")
    assert out.startswith("data: 005930.KS.csv, 666 rows kept of 700 (34 dropped, ")
    clean = load_prices(data)
    assert clean.frame["close"].min() > 45_000 and clean.frame["close"].max() < 90_000
    loaded = load_version(ModelStore(models), "005930.KS", 1)
    window = clean.frame[list(loaded.spec.features)].to_numpy(dtype=np.float64)[None, -loaded.spec.window :]
    forecast = float(loaded.predict_prices(window)[0, 0])
    last_close = float(clean.frame["close"].iloc[-1])
    assert 0.9 * last_close < forecast < 1.1 * last_close
    assert loaded.metadata["data"]["rows_dropped"]["missing_values"] == 34
    assert loaded.metadata["calendar"] == "XKRX"


def test_python_dash_m_training_runs_the_same_command_line(small_csv: Path) -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "training", "describe", "--data", str(small_csv)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ok.returncode == 0 and "rows kept      600" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "training", "describe", "--data", str(small_csv) + ".missing"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: file not found") and "Traceback" not in bad.stderr


def test_a_krx_export_on_the_default_calendar_is_refused_naming_the_days(tmp_path: Path) -> None:
    data = tmp_path / "005930.KS.csv"
    data.write_text(samsung_like_yahoo_export())
    status, out, err = run_cli("train", "--data", data, *TINY, "--models-dir", tmp_path / "models")
    assert status == 2 and out == ""
    assert "the data trades on days the XNYS calendar is closed (2021-01-18, 2021-02-15, " in err
    assert not (tmp_path / "models" / "005930.KS").exists()


def test_the_calendar_flag_keeps_the_code_as_typed() -> None:
    args = cli.build_parser().parse_args(["train", "--data", "x.csv", "--calendar", "XKRX"])
    assert cli._config_from_args(args).calendar == "XKRX"


def test_list_reads_a_store_in_object_storage(s3_url: str, tmp_path: Path) -> None:
    from training.remote_store import open_model_store
    from training.store import MODEL_FILE, REQUIRED_METADATA

    metadata = {key: {} for key in REQUIRED_METADATA} | {"architecture": "lstm", "window": 10, "created_at": "now"}
    writer = open_model_store(tmp_path / "writer", s3_url)
    writer.save_version("demo", lambda folder: (folder / MODEL_FILE).write_bytes(b"weights"), metadata)
    writer.set_alias("demo", "staging", 1, reason="test")
    status, out, err = run_cli("list", "--models-dir", tmp_path / "cache", "--store-url", s3_url)
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0] == "demo"
    version_one = next(line for line in lines if line.split()[:1] == ["1"])
    assert "lstm" in version_one and "staging" in version_one
