"""`python -m app datasets append NAME FILE`: the store's append from a shell, JSON out, refusals exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.__main__ import datasets_command, parse_arguments
from app.core.config import Settings
from app.datasets import DatasetStore
from tests.helpers import ROOT, price_csv, price_row, session_rows


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """A data folder holding dataset `d` (2024-12-02 to 2024-12-13)."""
    settings = Settings(data_dir=tmp_path / "var")
    DatasetStore(settings.datasets_dir).save("d", price_csv(session_rows("2024-12-02", 10)), "d.csv")
    return settings


def test_the_command_appends_and_prints_the_answer(settings: Settings, tmp_path: Path) -> None:
    rows = tmp_path / "new.csv"
    rows.write_bytes(price_csv([price_row("2024-12-16", 120.0)]))
    completed = subprocess.run(
        [sys.executable, "-m", "app", "datasets", "append", "d", str(rows), "--by", "nightly"],
        cwd=ROOT,
        # Embedded mode whatever the caller's environment says.
        env={
            **{key: value for key, value in os.environ.items() if not key.startswith("STOCKCAST_")},
            "STOCKCAST_DATA_DIR": str(settings.data_dir),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    answer = json.loads(completed.stdout)
    assert (answer["dataset"], answer["added_dates"], answer["last_date"]) == ("d", ["2024-12-16"], "2024-12-16")
    assert DatasetStore(settings.datasets_dir).report("d")["appended_by"] == "nightly"


def test_a_refusal_exits_2_with_the_message(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = tmp_path / "conflict.csv"
    rows.write_bytes(price_csv([price_row("2024-12-13", 50.0)]))
    assert datasets_command(settings, parse_arguments(["datasets", "append", "d", str(rows)])) == 2
    assert capsys.readouterr().err.startswith("stockcast: 2024-12-13 is in dataset 'd' with other values (")
    arguments = parse_arguments(["datasets", "append", "d", str(rows), "--replace"])
    assert arguments.by.startswith("cli")
    assert datasets_command(settings, arguments) == 0
    (correction,) = json.loads(capsys.readouterr().out)["corrections"]
    assert (correction["date"], correction["by"]) == ("2024-12-13", arguments.by)


def test_a_missing_file_or_dataset_exits_2(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    assert datasets_command(settings, parse_arguments(["datasets", "append", "d", "/nonexistent.csv"])) == 2
    assert "No such file or directory" in capsys.readouterr().err
    rows = parse_arguments(["datasets", "append", "nope", str(ROOT / "data" / "sample" / "msft.csv")])
    assert datasets_command(settings, rows) == 2
    assert capsys.readouterr().err.startswith("stockcast: unknown dataset 'nope'; datasets: ['d']")
