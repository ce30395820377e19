"""A champion demoted after a synthetic coverage breach, through HTTP: forecasts served, closes appended far
outside their bands, the alias log, /metrics and the next unpinned /predict answer's served_as.

The version is the session's real tiny network (its preprocessing and bands) served by the fake inference,
renamed `m` and recorded as trained on dataset `series`, so the ledger scores its forecasts when rows arrive.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.datasets import DatasetStore
from tests.fakes import fake_app
from tests.helpers import local_client, price_csv, price_row, session_rows
from training.calendars import sessions_after
from training.store import CHAMPION, METADATA_FILE, ModelStore

# Statuses exist from 5 scored sessions on; a champion goes after 3 breached sessions in a row.
MIN_SCORES, DEMOTE_AFTER = 5, 3


@pytest.fixture
def served(model_store: ModelStore, tmp_path: Path) -> Iterator[TestClient]:
    """An app serving `m` v1 as champion, trained (says its metadata) on `series`: 30 sessions up to 2024-11-12."""
    root = tmp_path / "models"
    shutil.copytree(model_store.folder("tiny") / "1", root / "m" / "1")
    metadata_path = root / "m" / "1" / METADATA_FILE
    metadata = json.loads(metadata_path.read_text())
    metadata.update(name="m", data={**metadata["data"], "name": "series.csv", "dataset": "series"})
    metadata_path.write_text(json.dumps(metadata))
    ModelStore(root).set_alias("m", CHAMPION, 1, reason="test fixture")
    DatasetStore(tmp_path / "var" / "datasets").save("series", price_csv(session_rows("2024-10-01", 30)), "series.csv")
    settings = {"monitoring_min_scores": MIN_SCORES, "demote_after_sessions": DEMOTE_AFTER}
    with local_client(fake_app(root, tmp_path / "var", **settings)) as client:
        yield client


def window_of(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The last 10 rows as /predict takes them."""
    keys = {"Date": "date", "Open": "open", "High": "high", "Low": "low", "Close": "close", "Volume": "volume"}
    return [{keys[key]: value for key, value in row.items() if key in keys} for row in rows[-10:]]


def test_a_champion_in_breach_for_n_sessions_is_demoted(served: TestClient) -> None:
    rows = session_rows("2024-10-01", 30)
    for session in range(MIN_SCORES + DEMOTE_AFTER - 1):
        answer = served.post("/predict", json={"model": "m", "window": window_of(rows)})
        assert answer.status_code == 200, answer.text
        assert answer.json()["skill"]["served_as"] == "champion", session
        # The close jumps 10 % up, then back down: far outside every band, and no better or worse than naive.
        last = rows[-1]
        close = last["Close"] * (1.1 if session % 2 == 0 else 1 / 1.1)
        (day,) = sessions_after(dt.date.fromisoformat(last["Date"]), 1)
        rows.append(price_row(day.isoformat(), round(close, 4)))
        appended = served.post("/datasets/series/rows", json={"rows": [rows[-1]]})
        assert appended.status_code == 200, appended.text
        assert (appended.json()["scoring"], appended.json()["scored_forecasts"]) == ("done", 1)

    aliases = served.get("/models/m/aliases").json()
    assert aliases["aliases"] == {}
    demotion = aliases["log"][-1]
    assert (demotion["alias"], demotion["from"], demotion["to"], demotion["by"]) == (CHAMPION, 1, None, "monitor")
    assert demotion["reason"].startswith(
        "demoted by the monitor: status coverage_breach at each of the last 3 scored sessions"
    )
    figures = demotion["figures"]
    assert figures["statuses"] == ["coverage_breach"] * DEMOTE_AFTER
    assert figures["live_sessions"] == MIN_SCORES + DEMOTE_AFTER - 1
    # The studentised bands widen with the window's volatility, which the jumps raise: the 80 % band breaks.
    assert figures["coverage"]["80"]["coverage"] < 0.2 and figures["coverage"]["80"]["kupiec_p_value"] < 0.01

    metrics = served.get("/metrics").text
    assert 'stockcast_demotions_total{model="m"} 1.0' in metrics
    answer = served.post("/predict", json={"model": "m", "window": window_of(rows)}).json()
    assert answer["skill"]["served_as"] == "unpromoted" and answer["version"] == 1


def test_no_demotion_while_the_setting_is_zero(model_store: ModelStore, tmp_path: Path) -> None:
    from app.online import demote_if_due
    from tests.helpers import make_settings

    settings = make_settings(tmp_path / "models", tmp_path / "var", demote_after_sessions=0)

    class NoScores:
        def scores(self, model: str) -> list[dict[str, Any]]:
            raise AssertionError("read nothing")

    assert demote_if_due(NoScores(), model_store, "tiny", settings) is None  # type: ignore[arg-type]
