"""The forecast ledger end to end: real HTTP, a real tiny network, real files.

A version is trained on the first part of a series; then for 30 sessions a
desk forecasts from a dated window and the next day's row is appended.
/models/{name}/monitoring must then report what the test computes itself
from the answers and the appended rows.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.datasets import DatasetStore
from tests.helpers import (
    WINDOW,
    ServiceProcess,
    WorkerProcess,
    require_postgres,
    scratch_database,
    tiny_clean,
    tiny_config,
    wait_until,
)
from training.data import load_prices
from training.fitting import TrainingRun, train_version
from training.store import ModelStore

pytestmark = [pytest.mark.e2e, pytest.mark.tf]

# The service, the whole series (first 700 rows trained on, then one appended per session), the mode.
Running = tuple[ServiceProcess, list[dict[str, Any]], str]
SESSIONS = 30
HORIZON = 2
COLUMNS = ("open", "high", "low", "close", "volume")


def csv_of(records: list[dict[str, Any]]) -> bytes:
    lines = ["Date,Open,High,Low,Close,Volume"]
    lines += [
        f"{row['date']},{row['open']!r},{row['high']!r},{row['low']!r},{row['close']!r},{int(row['volume'])}"
        for row in records
    ]
    return ("\n".join(lines) + "\n").encode()


def records(count: int) -> list[dict[str, Any]]:
    frame = tiny_clean(count).frame
    return [
        {"date": row["date"].strftime("%Y-%m-%d"), **{column: float(row[column]) for column in COLUMNS}}
        for row in frame.to_dict("records")
    ]


@pytest.fixture(params=["embedded", pytest.param("scaled_out", marks=pytest.mark.postgres)])
def service(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[ServiceProcess, list[dict[str, Any]], str]]:
    """The service on a version trained on the series' first 700 rows; scaled out, with a queue worker too."""
    every = records(700 + SESSIONS + HORIZON - 1)
    first = every[:700]
    datasets = DatasetStore(tmp_path / "var" / "datasets")
    datasets.save("series", csv_of(first), "series.csv")
    clean = load_prices(csv_of(first))
    source = {"name": "series.csv", "dataset": "series", "sha256": "-"}
    train_version(TrainingRun("series", clean, source, tiny_config(horizon=HORIZON)), ModelStore(tmp_path / "models"))
    with contextlib.ExitStack() as stack:
        env = {"STOCKCAST_LEDGER_FLUSH_SECONDS": "0.2"}
        if request.param == "scaled_out":
            require_postgres()
            url = stack.enter_context(scratch_database())
            env["STOCKCAST_DATABASE_URL"] = url
            worker = WorkerProcess(tmp_path / "models", tmp_path, "scorer", STOCKCAST_DATABASE_URL=url)
            worker.start()
            stack.callback(worker.stop)
        running = ServiceProcess(tmp_path / "models", tmp_path, **env)
        running.start()
        stack.callback(running.stop)
        yield running, every, request.param


def test_thirty_sessions_of_forecasts_are_scored_as_the_test_scores_them(
    service: Running,
) -> None:
    server, every, mode = service
    answers = []
    for session in range(SESSIONS + HORIZON - 1):
        known = 700 + session
        if session < SESSIONS:
            window = [{column: row[column] for column in ("date", *COLUMNS)} for row in every[known - WINDOW : known]]
            answer = server.post("/predict", json={"model": "series", "window": window})
            assert answer.status_code == 200, answer.text
            assert answer.json()["skill"]["in_sample"] is False
            answers.append(answer.json())
        appended = server.post("/datasets/series/rows", json={"rows": [every[known]]})
        assert appended.status_code == 200, appended.text
        assert appended.json()["rows_added"] == 1
        # Embedded, the API scores before it answers; scaled out, a queue worker does, and the append answers at once.
        assert appended.json()["scoring"] == {"embedded": "done", "scaled_out": "queued"}[mode]
    # What the test computes itself from the answers and the appended rows.
    closes = {row["date"]: row["close"] for row in every}
    expected: dict[int, dict[str, Any]] = {}
    for step in range(1, HORIZON + 1):
        model_errors, naive_errors, inside = [], [], {}
        for answer in answers:
            forecast = answer["forecast"][step - 1]
            actual = closes[forecast["date"]]
            model_errors.append(abs(math.log(actual / forecast["close"])))
            naive_errors.append(abs(math.log(actual / answer["last_value"])))
            for level, band in forecast["intervals"].items():
                inside.setdefault(level, []).append(band["lower"] <= actual <= band["upper"])
        expected[step] = {
            "count": len(model_errors),
            "ratio": (sum(model_errors) / len(model_errors)) / (sum(naive_errors) / len(naive_errors)),
            "coverage": {level: sum(flags) / len(flags) for level, flags in inside.items()},
        }

    # Scaled out, a queue worker scores after each append: wait for the last of them.
    def scored() -> dict[str, Any] | None:
        answer = server.get("/models/series/monitoring")
        assert answer.status_code == 200, answer.text
        report = answer.json()
        groups = report["groups"]
        done = groups and all(
            figures["scores"] == SESSIONS for figures in groups[0]["windows"]["since_live"]["per_step"]
        )
        return report if done else None

    check_monitoring(wait_until(scored, "every forecast to be scored", timeout=60), expected)


def check_monitoring(report: dict[str, Any], expected: dict[int, dict[str, Any]]) -> None:
    """Every step's count, coverage per level and ratio to naive, since the version went live, to 1e-9."""
    (group,) = report["groups"]
    assert (group["version"], group["served_as"]) == (1, report["status_of"]["served_as"])
    window = group["windows"]["since_live"]
    assert window["sessions"] == window["forecasts"] == SESSIONS
    assert group["replay"]["all_steps"]["scores"] == 0 and group["split_suspect"] == 0
    for figures in window["per_step"]:
        wanted = expected[figures["step"]]
        assert figures["scores"] == wanted["count"] == SESSIONS
        assert figures["ratio_to_naive"] == pytest.approx(wanted["ratio"], abs=1e-9)
        assert figures["coverage"] == pytest.approx(wanted["coverage"], abs=1e-9)
    assert [figures["step"] for figures in window["per_step"]] == list(range(1, HORIZON + 1))
    # The headline is step 1's, with its tests.
    assert window["ratio_to_naive"] == pytest.approx(expected[1]["ratio"], abs=1e-9)
    for level, coverage in expected[1]["coverage"].items():
        assert window["coverage"][level]["coverage"] == pytest.approx(coverage, abs=1e-9)
        assert window["coverage"][level]["observations"] == SESSIONS
