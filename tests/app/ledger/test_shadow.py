"""The shadow challenger's pure side: which logged windows it replays, how they are rebuilt, the live test."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from app.datasets import DatasetStore
from app.ledger.postgres import PostgresLedger
from app.ledger.shadow import champion_origins, live_comparison, live_promotion, paired_errors, windows_at
from app.ledger.store import LedgerStore, SqliteLedger
from app.shadow import shadow_dataset
from tests.helpers import metadata_only_version, price_csv, require_postgres, scratch_database, session_rows
from training.significance import diebold_mariano
from training.spec import WindowSpec
from training.store import CHALLENGER, CHAMPION, ModelStore

SPEC = WindowSpec(features=("volume", "close"), label="close", window=3)


def frame() -> pd.DataFrame:
    days = pd.bdate_range("2024-01-01", periods=6)
    return pd.DataFrame({"date": days, "close": np.arange(6.0) + 100, "volume": np.arange(6.0) * 10})


def test_a_window_is_the_last_rows_up_to_its_origin_in_the_versions_feature_order() -> None:
    origins, windows = windows_at(frame(), SPEC, ["2024-01-01", "2024-01-03", "2024-01-08", "2023-12-29"])
    # Too few rows before 2024-01-01, and 2023-12-29 is not in the data: both skipped.
    assert origins == ["2024-01-03", "2024-01-08"]
    np.testing.assert_array_equal(windows[0], [[0.0, 100.0], [10.0, 101.0], [20.0, 102.0]])
    np.testing.assert_array_equal(windows[1][:, 1], [103.0, 104.0, 105.0])


def test_each_origin_is_replayed_once_from_its_first_logged_forecast() -> None:
    logged = [
        {"forecast_id": "b", "served_as": "champion", "origin": "2024-01-03", "served_at": "2024-01-03T21:00"},
        {"forecast_id": "a", "served_as": "champion", "origin": "2024-01-03", "served_at": "2024-01-03T20:00"},
        {"forecast_id": "c", "served_as": "champion", "origin": "2024-01-04", "served_at": "2024-01-04T20:00"},
        {"forecast_id": "d", "served_as": "champion", "origin": "2024-01-05", "served_at": "2024-01-05T20:00"},
    ]
    found = champion_origins(logged, replayed={"2024-01-05"})
    assert {origin: row["forecast_id"] for origin, row in found.items()} == {"2024-01-03": "a", "2024-01-04": "c"}


def score(served_as: str, version: int, target: str, error: float, naive: float = 0.02, **extra: object) -> dict:
    row = {"served_as": served_as, "version": version, "target": target, "origin": target, "forecast_id": target}
    return {**row, "step": 1, "replay": 0, "split_suspect": 0, "log_error": error, "naive_log_error": naive, **extra}


def test_the_live_test_pairs_the_two_on_the_targets_both_have() -> None:
    scores = [
        score("champion", 1, "2024-01-02", 0.010),
        score("champion", 1, "2024-01-03", -0.020),
        score("champion", 1, "2024-01-04", 0.015),
        score("champion", 1, "2024-01-05", 0.030),  # the challenger has none here: not paired
        score("challenger", 2, "2024-01-02", 0.005),
        score("challenger", 2, "2024-01-03", -0.010),
        score("challenger", 2, "2024-01-04", 0.012),
        score("challenger", 2, "2024-01-06", 0.001, replay=1),  # a replay: never live evidence
    ]
    targets, champion, challenger = paired_errors(scores, 1, 2)
    assert targets == ["2024-01-02", "2024-01-03", "2024-01-04"]
    comparison = live_comparison(scores, 1, 2)
    assert comparison["sessions"] == 3
    assert comparison["vs_champion"] == diebold_mariano(challenger, champion, 1)
    assert comparison["vs_naive"] == diebold_mariano(challenger, np.full(3, 0.02), 1)
    assert live_comparison(scores[:1], 1, 2)["vs_champion"] is None


def holding(p_value: float = 0.01) -> dict:
    """Challenger metadata whose backtest meets the gate's criteria at 0.05 when `p_value` is below it."""
    test = {"statistic": -3.0, "p_value": p_value, "windows": 500, "lag": 0}
    coverage = {"within": True, "coverage": 0.9, "windows": 500, "low": 0.87, "high": 0.93}
    evidence = {"vs_naive_step_1": test, "vs_naive_pooled": test, "vs_drift_pooled": test}
    return {"backtest": {"evidence": {**evidence, "coverage_90": coverage}}}


def better_by_far(sessions: int) -> list[dict]:
    days = [f"2024-02-{day:02d}" for day in range(1, sessions + 1)]
    champion = [score("champion", 1, day, 0.02 + 0.001 * (index % 3)) for index, day in enumerate(days)]
    return champion + [score("challenger", 2, day, 0.001, naive=0.03) for day in days]


def test_live_promotion_needs_the_sessions_the_backtest_and_both_live_tests() -> None:
    assert live_promotion(better_by_far(10), 1, 2, holding(), level=0.05, min_sessions=10)["due"]
    few = live_promotion(better_by_far(9), 1, 2, holding(), level=0.05, min_sessions=10)
    assert not few["due"] and few["reason"] == "9 paired live sessions; live promotion needs 10"
    lapsed = live_promotion(better_by_far(10), 1, 2, holding(0.2), level=0.05, min_sessions=10)
    assert not lapsed["due"] and "no longer meets the gate's criteria" in lapsed["reason"]
    worse = better_by_far(10)[:10] + [score("challenger", 2, f"2024-02-{day:02d}", 0.05) for day in range(1, 11)]
    refused = live_promotion(worse, 1, 2, holding(), level=0.05, min_sessions=10)
    assert not refused["due"] and refused["reason"].startswith("no live evidence of beating champion (p ")


def test_each_look_at_the_live_test_spends_the_level() -> None:
    verdict = live_promotion(better_by_far(12), 1, 2, holding(), level=0.05, min_sessions=10)
    assert (verdict["look"], verdict["level"]) == (3, 0.05 / 12)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LedgerStore]:
    """Both backends: SQLite (embedded) and the real PostgreSQL (the queue worker's score task)."""
    if request.param == "sqlite":
        yield SqliteLedger(tmp_path / "ledger.sqlite3")
        return
    require_postgres()
    with scratch_database() as url:
        store = PostgresLedger(url)
        yield store
        store.close()


def test_shadow_dataset_writes_and_scores_the_challengers_rows_once(ledger: LedgerStore, tmp_path: Path) -> None:
    fields = {
        "features": ["close"], "label": "close", "window": 3, "horizon": 1, "transform": "relative",
        "data": {"dataset": "series"}, "intervals": {},
    }  # fmt: skip
    models = ModelStore(tmp_path / "models")
    for version in (1, 2):
        metadata_only_version(models.root, "m", version, **fields)
    models.set_alias("m", CHAMPION, 1)
    models.set_alias("m", CHALLENGER, 2)
    rows = session_rows("2024-10-01", 10)
    datasets = DatasetStore(tmp_path / "datasets")
    datasets.save("series", price_csv(rows), "series.csv")
    logged = {
        "forecast_id": "f1", "model": "m", "version": 1, "served_as": CHAMPION, "dataset": "series",
        "origin": rows[-2]["Date"], "in_sample": False, "data_through": rows[-2]["Date"], "label": "close",
        "label_last": rows[-2]["Close"], "scale": None, "served_at": "2024-10-11T20:00:00.000000+00:00",
        "steps": [{"date": rows[-1]["Date"], "close": rows[-2]["Close"], "bounds": {}}],
    }  # fmt: skip
    ledger.add_forecasts([logged])
    calls: list[np.ndarray] = []

    def factory(_models_dir: Path, _name: str, _version: int) -> Any:
        def forecast(windows: np.ndarray) -> np.ndarray:
            calls.append(windows)
            return windows[:, -1:, :1] + 1.0

        return forecast

    # Trained through the origin's target: that forecast would be in-sample, so it is no evidence.
    challenger_metadata = models.version_dir("m", 2) / "metadata.json"
    challenger_metadata.write_text(json.dumps({**models.read_metadata("m", 2), "trained_through": rows[-1]["Date"]}))
    assert shadow_dataset(ledger, models, datasets, "series", factory) == 0
    challenger_metadata.write_text(json.dumps({**models.read_metadata("m", 2), "trained_through": rows[-2]["Date"]}))
    assert shadow_dataset(ledger, models, datasets, "series", factory) == 1
    assert shadow_dataset(ledger, models, datasets, "series", factory) == 0  # replayed once only
    np.testing.assert_array_equal(calls[0][0, :, 0], [row["Close"] for row in rows[-4:-1]])
    (row,) = [row for row in ledger.logged_forecasts("m", 2)]
    assert (row["served_as"], row["origin"], row["served_at"]) == (CHALLENGER, logged["origin"], logged["served_at"])
    (scored,) = [score for score in ledger.scores("m") if score["served_as"] == CHALLENGER]
    assert (scored["target"], scored["forecast"], scored["actual"]) == (
        rows[-1]["Date"],
        rows[-2]["Close"] + 1.0,
        rows[-1]["Close"],
    )
