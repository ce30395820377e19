"""The ledger's monitoring side over a real SQLite ledger: fresh reports, the chart, the summary /metrics caches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.ledger.monitor import Monitor
from app.ledger.store import SqliteLedger
from tests.helpers import score_row

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class CountingLedger(SqliteLedger):
    """A SQLite ledger that counts the full reads of scores."""

    reads = 0

    def scores(self, model: str) -> list[dict[str, Any]]:
        self.reads += 1
        return super().scores(model)


def monitor_of(store: SqliteLedger, clock: Clock | None = None) -> Monitor:
    return Monitor(store, coverage_alpha=0.01, skill_alpha=0.05, min_scores=20, clock=clock or Clock())


def test_served_steps_and_score_counts_are_read_from_the_store(tmp_path: Path) -> None:
    store = SqliteLedger(tmp_path / "l.sqlite3")
    steps = [{"date": "2024-01-02", "close": 100.5, "bounds": {"90": [99.0, 102.0]}}]
    store.add_forecasts(
        [
            {
                "forecast_id": f"f{index}",
                "model": "m",
                "version": 1,
                "served_as": "champion",
                "origin": "2024-01-01",
                "in_sample": False,
                "label": "close",
                "label_last": 100.0,
                "steps": steps,
                "served_at": "2024-01-01T00:00:00+00:00",
            }
            for index in range(1200)
        ]
    )
    found = store.served_steps([f"f{index}" for index in range(0, 1200, 2)] + ["gone"])
    assert len(found) == 600 and found["f2"] == steps and "gone" not in found
    store.add_scores([score_row(origin, model="m") for origin in range(5)] + [score_row(0, model="other")])
    assert store.score_count("m") == 5 and store.score_count("nope") == 0


def test_the_summary_is_read_again_only_when_old_and_changed(tmp_path: Path) -> None:
    store, clock = CountingLedger(tmp_path / "l.sqlite3"), Clock()
    monitor = monitor_of(store, clock)
    store.add_scores([score_row(origin) for origin in range(25)])
    first = monitor.summary("tiny", 1)
    assert first == {
        "scored": 25,
        "coverage": {"80": 1.0, "90": 1.0, "95": 1.0},
        "ratio_to_naive": first["ratio_to_naive"],
        "status": "ok",
        "status_code": 0,
    }
    assert store.reads == 1
    store.add_scores([score_row(25)])
    # Fresh enough: not even counted.
    clock.now = monitor.max_age_seconds / 2
    assert monitor.summary("tiny", 1)["scored"] == 25 and store.reads == 1
    # Old, and the count changed: read again.
    clock.now = monitor.max_age_seconds * 2
    assert monitor.summary("tiny", 1)["scored"] == 26 and store.reads == 2
    # Old, the count unchanged: kept.
    clock.now = monitor.max_age_seconds * 4
    assert monitor.summary("tiny", 1)["scored"] == 26 and store.reads == 2
    # Another served version: read at once.
    assert monitor.summary("tiny", 2) == {
        "scored": 0,
        "coverage": {},
        "ratio_to_naive": None,
        "status": "insufficient_data",
        "status_code": 1,
    }
    assert store.reads == 3


def test_the_report_names_the_model_and_is_read_afresh(tmp_path: Path) -> None:
    store = SqliteLedger(tmp_path / "l.sqlite3")
    monitor = monitor_of(store)
    assert monitor.report("tiny", 1)["groups"] == []
    store.add_scores([score_row(origin) for origin in range(3)])
    answer = monitor.report("tiny", 1)
    assert answer["model"] == "tiny" and answer["groups"][0]["live_sessions"] == 3
    assert answer["kept"] == {"kept": 0, "hits": 0, "undated": 0}


def test_charts_with_and_without_scores_and_bands(tmp_path: Path) -> None:
    store = SqliteLedger(tmp_path / "l.sqlite3")
    monitor = monitor_of(store)
    empty = monitor.chart("tiny", 1)
    # Scores whose forecasts are gone (past the retention): drawn without their band.
    store.add_scores([score_row(origin, inside={"90": int(origin % 4 > 0)}) for origin in range(40)])
    drawn = monitor.chart("tiny", 1)
    assert empty.startswith(PNG_SIGNATURE) and drawn.startswith(PNG_SIGNATURE)
    assert len(drawn) > len(empty)
