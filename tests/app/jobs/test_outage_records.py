"""What a training run does while its job database is unreachable: progress is dropped, settling waits."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from app.jobs.outages import OutageTolerantRecords


class FlakyRecords:
    """A job store whose database is down for the first `down_calls` calls of each kind."""

    def __init__(self, down_calls: int) -> None:
        self.down_calls = down_calls
        self.calls: dict[str, int] = {}
        self.written: list[tuple[str, Any]] = []

    def _call(self, kind: str, value: Any) -> Any:
        self.calls[kind] = self.calls.get(kind, 0) + 1
        if self.calls[kind] <= self.down_calls:
            raise psycopg.OperationalError("connection refused")
        self.written.append((kind, value))
        return True

    def set_progress(self, job_id: str, progress: dict[str, Any], attempt: int | None = None) -> None:
        self._call("progress", progress)

    def cancel_requested(self, job_id: str) -> bool:
        self._call("cancel", None)
        return True

    def set_result(self, job_id: str, result: dict[str, Any], attempt: int | None = None) -> None:
        self._call("result", result)

    def finish(self, job_id: str, outcome: Any, attempt: int | None = None) -> bool:
        return bool(self._call("finish", outcome))


def tolerant(records: FlakyRecords, give_up_seconds: float = 60) -> tuple[OutageTolerantRecords, list[float]]:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    return OutageTolerantRecords(records, give_up_seconds, clock=lambda: now[0], sleep=sleep), slept


def test_progress_and_cancel_checks_are_skipped_while_the_database_is_down() -> None:
    records = FlakyRecords(down_calls=1)
    wrapped, slept = tolerant(records)
    wrapped.set_progress("j", {"epoch": 1})
    assert wrapped.cancel_requested("j") is False  # skipped: the outage was seen a moment ago
    assert records.calls == {"progress": 1} and slept == []


def test_the_result_waits_for_the_database_to_come_back() -> None:
    records = FlakyRecords(down_calls=5)
    wrapped, slept = tolerant(records)
    wrapped.set_result("j", {"version": 3})
    assert records.written == [("result", {"version": 3})]
    assert slept == [1.0] * 5


def test_a_database_down_longer_than_the_limit_fails_the_write() -> None:
    wrapped, _ = tolerant(FlakyRecords(down_calls=100), give_up_seconds=10)
    with pytest.raises(psycopg.OperationalError):
        wrapped.finish("j", "failed")


def test_other_errors_are_not_an_outage() -> None:
    class Broken(FlakyRecords):
        def set_progress(self, job_id: str, progress: dict[str, Any], attempt: int | None = None) -> None:
            raise ValueError("a bug")

    wrapped, _ = tolerant(Broken(down_calls=0))
    with pytest.raises(ValueError, match="a bug"):
        wrapped.set_progress("j", {})
