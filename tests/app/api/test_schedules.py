"""PUT, GET and DELETE /models/{name}/schedule: the answer, the next run, the runs and job, one test per error."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.schedules.ticker import Scheduler, tick

ANCHOR = dt.datetime(2024, 11, 25, 12, tzinfo=dt.UTC)
SPEC = {"dataset": "msft", "when": {"after_close_minutes": 45, "every_sessions": 1}, "min_new_rows": 0}


@pytest.fixture
def clocked(client: TestClient) -> Iterator[TestClient]:
    """The session's client with its clock stopped at ANCHOR (a Monday), and no schedule left behind."""
    app: Any = client.app
    real_clock = app.state.clock
    app.state.clock = lambda: ANCHOR
    try:
        yield client
    finally:
        app.state.clock = real_clock
        client.delete("/models/tiny/schedule")


def test_a_schedule_is_set_read_and_removed(clocked: TestClient) -> None:
    set_answer = clocked.put("/models/tiny/schedule", json={**SPEC, "training": {"epochs": 3}})
    assert set_answer.status_code == 200, set_answer.text
    schedule = set_answer.json()
    assert {key: schedule[key] for key in ("model", "dataset", "calendar", "revision", "enabled", "training")} == {
        "model": "tiny",
        "dataset": "msft",
        "calendar": "XNYS",
        "revision": 1,
        "enabled": True,
        "training": {"epochs": 3},
    }
    assert schedule["next_run"] == "2024-11-25T21:45:00+00:00"
    assert schedule["anchor"] == ANCHOR.isoformat()
    assert (schedule["runs"], schedule["last_job"], schedule["last_gate"]) == ([], None, None)
    again = clocked.put("/models/tiny/schedule", json={**SPEC, "enabled": False}).json()
    assert (again["revision"], again["next_run"], again["training"]) == (2, None, {})
    assert clocked.get("/models/tiny/schedule").json() == again
    removed = clocked.delete("/models/tiny/schedule")
    assert removed.status_code == 200 and removed.json() == again
    missing = clocked.get("/models/tiny/schedule")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "model 'tiny' has no schedule; set one with PUT /models/tiny/schedule"}


def test_a_fired_slot_shows_its_run_and_job(clocked: TestClient) -> None:
    assert clocked.put("/models/tiny/schedule", json=SPEC).status_code == 200
    app: Any = clocked.app
    scheduler = Scheduler(app.state.schedules, app.state.jobs, app.state.store, app.state.datasets, 20)
    (run,) = tick(scheduler, dt.datetime(2024, 11, 25, 22, tzinfo=dt.UTC))
    try:
        schedule = clocked.get("/models/tiny/schedule").json()
        assert schedule["runs"][0] == {
            "slot": "2024-11-25T21:45:00+00:00",
            "outcome": "submitted",
            "reason": None,
            "job_id": run["job_id"],
            "rows": 7983,  # the sample's rows
            "slots": 1,
            "at": "2024-11-25T22:00:00+00:00",
            "revision": 1,
        }
        assert schedule["last_job"]["id"] == run["job_id"]
        assert schedule["next_run"] == "2024-11-26T21:45:00+00:00"
        job = clocked.get(f"/jobs/{run['job_id']}").json()
        assert (job["submitted_by"], job["request"]) == ("schedule", {"model": "tiny", "dataset": "msft"})
    finally:
        clocked.delete(f"/jobs/{run['job_id']}")


def test_an_unknown_model_is_404(clocked: TestClient) -> None:
    answer = clocked.put("/models/nope/schedule", json=SPEC)
    assert answer.status_code == 404
    assert answer.json()["detail"].startswith("unknown model 'nope'; models: [")


def test_an_unknown_dataset_is_404(clocked: TestClient) -> None:
    answer = clocked.put("/models/tiny/schedule", json={**SPEC, "dataset": "nope"})
    assert answer.status_code == 404
    assert answer.json()["detail"].startswith("unknown dataset 'nope'; datasets: [")


def test_training_settings_keep_the_bounds_of_train(clocked: TestClient) -> None:
    answer = clocked.put("/models/tiny/schedule", json={**SPEC, "training": {"epochs": 0}})
    assert answer.status_code == 422
    assert answer.json()["detail"] == "body.training.epochs: Input should be greater than or equal to 1"


def test_inconsistent_training_settings_are_422(clocked: TestClient) -> None:
    answer = clocked.put("/models/tiny/schedule", json={**SPEC, "training": {"label": "volume", "features": ["close"]}})
    assert answer.status_code == 422
    assert answer.json()["detail"] == (
        "label 'volume' must be one of the features ['close']: the forecast is expressed relative to the label's"
        " last value in the window"
    )


def test_a_schedule_slot_bound_is_422(clocked: TestClient) -> None:
    answer = clocked.put("/models/tiny/schedule", json={**SPEC, "when": {"every_sessions": 0}})
    assert answer.status_code == 422
    assert answer.json()["detail"] == "body.when.every_sessions: Input should be greater than or equal to 1"


def test_an_unknown_field_is_422(clocked: TestClient) -> None:
    answer = clocked.put("/models/tiny/schedule", json={**SPEC, "cron": "45 16 * * 1-5"})
    assert answer.status_code == 422
    assert answer.json()["detail"] == "body.cron: Extra inputs are not permitted"
