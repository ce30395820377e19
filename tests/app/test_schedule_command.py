"""`python -m app schedule set|show|delete|list`: what the schedule routes do, from a shell, JSON out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.__main__ import parse_arguments, schedule_command
from app.core.config import Settings
from app.datasets import DatasetStore
from tests.helpers import metadata_only_version, price_csv, session_rows


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """A store with model `m` (one version, XKRX) and a dataset `d`."""
    settings = Settings(data_dir=tmp_path / "var", models_dir=tmp_path / "models")
    metadata_only_version(settings.models_dir, "m", 1, calendar="XKRX")
    DatasetStore(settings.datasets_dir).save("d", price_csv(session_rows("2024-12-02", 10)), "d.csv")
    return settings


def run(settings: Settings, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = schedule_command(settings, parse_arguments(["schedule", *argv]))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_set_show_list_and_delete(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(settings, capsys, "set", "m", "--dataset", "d", "--every-sessions", "5", "--epochs", "7")
    assert code == 0
    schedule = json.loads(out)
    assert (schedule["calendar"], schedule["when"], schedule["training"]) == (
        "XKRX",  # the model's newest version's calendar
        {"after_close_minutes": 45, "every_sessions": 5},
        {"epochs": 7},
    )
    assert schedule["updated_by"].startswith("cli")
    assert json.loads(run(settings, capsys, "show", "m")[1]) == schedule
    assert [item["model"] for item in json.loads(run(settings, capsys, "list")[1])] == ["m"]
    assert json.loads(run(settings, capsys, "delete", "m")[1])["model"] == "m"
    assert run(settings, capsys, "show", "m")[2] == (
        "stockcast: model 'm' has no schedule; set one with PUT /models/m/schedule\n"
    )


def test_out_of_bounds_settings_exit_2_naming_the_field(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(settings, capsys, "set", "m", "--dataset", "d", "--min-new-rows", "-1")
    assert code == 2
    assert err == "stockcast: min_new_rows: Input should be greater than or equal to 0, got -1\n"
    code, _, err = run(settings, capsys, "set", "nope", "--dataset", "d")
    assert (code, err) == (2, "stockcast: unknown model 'nope'; models: ['m']\n")
