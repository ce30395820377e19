"""The shadow challenger through HTTP: the champion serves, closes arrive, the challenger forecasts the same
logged windows after the fact, both are scored, and /monitoring's paired live test is the one the score rows give.

`m` v1 (champion) and v2 (challenger) are copies of the session's real tiny network, served by the fake
inference and recorded as trained on dataset `series`. The challenger's network is a stand-in (the forecaster
is injectable): the child process that runs a real one is tested in tests/app/test_shadow_process.py.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.datasets import DatasetStore
from app.inference.steps import interval_levels
from app.ledger.shadow import live_promotion
from tests.fakes import fake_app
from tests.helpers import local_client, price_csv, price_row, session_rows
from training.calendars import sessions_after
from training.significance import diebold_mariano
from training.store import CHALLENGER, CHAMPION, METADATA_FILE, ModelStore

SESSIONS = 8


def copy_version(model_store: ModelStore, root: Path, version: int) -> None:
    """The tiny network as `m` v`version`, trained (says its metadata) on `series`."""
    shutil.copytree(model_store.folder("tiny") / "1", root / "m" / str(version))
    path = root / "m" / str(version) / METADATA_FILE
    metadata = json.loads(path.read_text())
    metadata.update(name="m", version=version, data={**metadata["data"], "name": "series.csv", "dataset": "series"})
    path.write_text(json.dumps(metadata))


def drifting_forecaster(models_dir: Path, name: str, version: int) -> Any:
    """The challenger's stand-in: 0.3 % above the last close at every step, bands 5 % either side."""
    metadata = ModelStore(models_dir).read_metadata(name, version)
    levels, horizon = interval_levels(metadata), int(metadata["horizon"])
    label = list(metadata["features"]).index(metadata["label"])

    def forecast(windows: np.ndarray) -> np.ndarray:
        last = windows[:, -1, label][:, None] * 1.003 * np.ones((1, horizon))
        bounds = [last * 0.95] * len(levels) + [last * 1.05] * len(levels)
        return np.stack([last, *bounds], axis=1)

    return forecast


@pytest.fixture
def served(model_store: ModelStore, tmp_path: Path) -> Iterator[TestClient]:
    """`m` v1 champion and v2 challenger; `series` has 30 sessions up to 2024-11-12."""
    root = tmp_path / "models"
    copy_version(model_store, root, 1)
    copy_version(model_store, root, 2)
    store = ModelStore(root)
    store.set_alias("m", CHAMPION, 1, reason="test fixture")
    store.set_alias("m", CHALLENGER, 2, reason="test fixture")
    DatasetStore(tmp_path / "var" / "datasets").save("series", price_csv(session_rows("2024-10-01", 30)), "series.csv")
    with local_client(fake_app(root, tmp_path / "var", monitoring_min_scores=3, demote_after_sessions=0)) as client:
        client.app.state.shadow_forecaster = drifting_forecaster  # type: ignore[attr-defined]
        yield client


def window_of(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The last 10 rows as /predict takes them."""
    keys = {"Date": "date", "Open": "open", "High": "high", "Low": "low", "Close": "close", "Volume": "volume"}
    return [{keys[key]: value for key, value in row.items() if key in keys} for row in rows[-10:]]


def serve_sessions(client: TestClient, count: int, served: int = 0) -> list[dict[str, Any]]:
    """Sessions `served` to `count`: the champion answers, then the next close arrives (up 1 % or down 0.5 %).

    The closes are the same on every call, so a second call goes on where the first (of `served`) stopped.
    """
    rows = session_rows("2024-10-01", 30)
    for session in range(count):
        last = rows[-1]
        (day,) = sessions_after(dt.date.fromisoformat(last["Date"]), 1)
        following = price_row(day.isoformat(), round(last["Close"] * (1.01 if session % 3 else 0.995), 4))
        if session < served:
            rows.append(following)
            continue
        answer = client.post("/predict", json={"model": "m", "window": window_of(rows)})
        assert answer.status_code == 200, answer.text
        rows.append(following)
        appended = client.post("/datasets/series/rows", json={"rows": [rows[-1]]})
        assert appended.status_code == 200 and appended.json()["scoring"] == "done", appended.text
    return rows


def test_the_challenger_is_scored_on_the_champions_logged_windows(served: TestClient) -> None:
    serve_sessions(served, SESSIONS)
    ledger = served.app.state.ledger.store  # type: ignore[attr-defined]
    champion = {row["origin"]: row for row in ledger.logged_forecasts("m", 1)}
    challenger = {row["origin"]: row for row in ledger.logged_forecasts("m", 2)}
    assert len(champion) == SESSIONS and set(challenger) == set(champion)
    for origin, row in challenger.items():
        assert row["served_as"] == CHALLENGER
        assert (row["served_at"], row["data_through"]) == (
            champion[origin]["served_at"],
            champion[origin]["data_through"],
        )

    scores = ledger.scores("m")
    step_1 = {
        (row["served_as"], row["target"]): abs(row["log_error"])
        for row in scores
        if row["step"] == 1 and not row["replay"] and not row["split_suspect"]
    }
    targets = sorted(target for served_as, target in step_1 if served_as == CHALLENGER)
    assert len(targets) == SESSIONS
    ours = np.array([step_1[(CHALLENGER, target)] for target in targets])
    theirs = np.array([step_1[(CHAMPION, target)] for target in targets])
    naive = np.array(
        [
            abs(row["naive_log_error"])
            for row in sorted(scores, key=lambda row: row["target"])
            if row["served_as"] == CHALLENGER and row["step"] == 1
        ]
    )

    report = served.get("/models/m/monitoring").json()
    block = report["challenger"]
    assert (block["champion_version"], block["challenger_version"], block["sessions"]) == (1, 2, SESSIONS)
    assert block["vs_champion"] == pytest.approx(diebold_mariano(ours, theirs, 1))
    assert block["vs_naive"] == pytest.approx(diebold_mariano(ours, naive, 1))
    assert set(block["champion_coverage"]) == set(block["challenger_coverage"]) and block["challenger_coverage"]
    groups = {(group["version"], group["served_as"]) for group in report["groups"]}
    assert {(1, CHAMPION), (2, CHALLENGER)} <= groups
    # The challenger serves no one: the model's status is the champion's.
    assert report["status_of"] == {"version": 1, "served_as": CHAMPION}


def test_predict_answers_are_byte_identical_with_and_without_a_challenger(served: TestClient) -> None:
    rows = serve_sessions(served, 2)
    body = {"model": "m", "window": window_of(rows)}
    with_challenger = served.post("/predict", json=body)
    store: ModelStore = served.app.state.store  # type: ignore[attr-defined]
    store.remove_alias("m", CHALLENGER, "test: no challenger")
    without = served.post("/predict", json=body)
    assert with_challenger.status_code == without.status_code == 200
    assert with_challenger.content == without.content
    assert with_challenger.headers["x-forecast-id"] == without.headers["x-forecast-id"]


# XNYS on 2024-12-02: open at 14:30 UTC, closed at 22:00 UTC.
MARKET_OPEN = dt.datetime(2024, 12, 2, 15, 0, tzinfo=dt.UTC)
MARKET_CLOSED = dt.datetime(2024, 12, 2, 22, 0, tzinfo=dt.UTC)


def with_backtest_evidence(root: Path, version: int) -> None:
    """Give a version backtest evidence that meets the gate's criteria (the tiny network's does not)."""
    path = root / "m" / str(version) / METADATA_FILE
    metadata = json.loads(path.read_text())
    test = {"statistic": -3.0, "p_value": 0.03, "windows": 500, "lag": 0}
    metadata["backtest"] = {
        **(metadata.get("backtest") or {}),
        "evidence": {
            "vs_naive_step_1": test,
            "vs_naive_pooled": test,
            "vs_drift_pooled": test,
            "mae": {"model": 0.9, "naive": 1.0, "drift": 1.0},
            "coverage_90": {"within": True, "coverage": 0.9, "windows": 500, "low": 0.874, "high": 0.926},
        },
    }
    path.write_text(json.dumps(metadata))


def oracle_forecaster(closes: dict[float, float]) -> Any:
    """A challenger that knows the next close (from the last one), off by 0.01 %: it beats everyone."""

    def factory(models_dir: Path, name: str, version: int) -> Any:
        metadata = ModelStore(models_dir).read_metadata(name, version)
        levels, horizon = interval_levels(metadata), int(metadata["horizon"])
        label = list(metadata["features"]).index(metadata["label"])

        def forecast(windows: np.ndarray) -> np.ndarray:
            nexts = np.array([closes.get(round(last, 4), last) for last in windows[:, -1, label]]) * 1.0001
            path = nexts[:, None] * np.ones((1, horizon))
            return np.stack([path, *([path * 0.95] * len(levels)), *([path * 1.05] * len(levels))], axis=1)

        return forecast

    return factory


def test_the_challenger_is_promoted_on_live_evidence_only_between_sessions(
    model_store: ModelStore, tmp_path: Path
) -> None:
    root = tmp_path / "models"
    copy_version(model_store, root, 1)
    copy_version(model_store, root, 2)
    with_backtest_evidence(root, 2)
    store = ModelStore(root)
    store.set_alias("m", CHAMPION, 1, reason="test fixture")
    store.set_alias("m", CHALLENGER, 2, reason="test fixture")
    DatasetStore(tmp_path / "var" / "datasets").save("series", price_csv(session_rows("2024-10-01", 30)), "series.csv")
    settings = {"promote_on_live_evidence": True, "live_min_sessions": 6, "demote_after_sessions": 0}
    # The closes serve_sessions appends, keyed by the close before each.
    rows = session_rows("2024-10-01", 30)
    closes: dict[float, float] = {}
    for session in range(SESSIONS):
        nxt = round(rows[-1]["Close"] * (1.01 if session % 3 else 0.995), 4)
        closes[round(rows[-1]["Close"], 4)] = nxt
        rows.append({**rows[-1], "Close": nxt})
    with local_client(fake_app(root, tmp_path / "var", **settings)) as client:
        client.app.state.shadow_forecaster = oracle_forecaster(closes)  # type: ignore[attr-defined]
        client.app.state.clock = lambda: MARKET_OPEN  # type: ignore[attr-defined]
        serve_sessions(client, SESSIONS - 1)
        # Enough evidence by now, but the market is open: no promotion.
        assert store.aliases("m") == {CHAMPION: 1, CHALLENGER: 2}
        ledger = client.app.state.ledger.store  # type: ignore[attr-defined]
        verdict = live_promotion(ledger.scores("m"), 1, 2, store.read_metadata("m", 2), level=0.05, min_sessions=6)
        assert verdict["due"], verdict["reason"]
        client.app.state.clock = lambda: MARKET_CLOSED  # type: ignore[attr-defined]
        rows = serve_sessions(client, SESSIONS, served=SESSIONS - 1)

        assert store.aliases("m") == {CHAMPION: 2}
        promoted, retired = store.alias_log("m")[-2:]
        assert (promoted["alias"], promoted["from"], promoted["to"], promoted["by"]) == (CHAMPION, 1, 2, "monitor")
        assert promoted["reason"].startswith("promoted on live evidence: v2 beats champion v1 (p ")
        assert promoted["backtest"]["holds"] is True and promoted["backtest"]["beats_naive"] is True
        live = promoted["live"]
        assert live["sessions"] == SESSIONS and promoted["look"] == SESSIONS - 6 + 1
        assert live["vs_champion"]["p_value"] < promoted["level"] and live["vs_naive"]["p_value"] < promoted["level"]
        assert (retired["alias"], retired["to"]) == (CHALLENGER, None)
        answer = client.post("/predict", json={"model": "m", "window": window_of(rows)}).json()
        assert (answer["version"], answer["skill"]["served_as"]) == (2, CHAMPION)
