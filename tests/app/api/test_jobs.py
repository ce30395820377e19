"""/train and /jobs in-process: real spawned workers, real Keras training, real files."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.api.schemas import TrainRequest
from tests.helpers import wait_job
from tests.stub_training import stub_training
from training.config import TrainConfig, public_fields

TINY = {"window": 10, "units": 4, "epochs": 1, "batch_size": 256}


@pytest.mark.tf
def test_train_job_runs_in_a_worker_and_its_version_is_served(empty_client: TestClient) -> None:
    # The job's path is the point, not the backtest (tests/app/test_http_e2e.py runs one through a job).
    body = {"model": "jobbed", "dataset": "msft", "architecture": "simple_rnn", **TINY, "backtest_folds": 0}
    accepted = empty_client.post("/train", json=body)
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["status"] == "queued"
    job = wait_job(empty_client, accepted.json()["job_id"], ("succeeded", "failed"))
    assert job["status"] == "succeeded", job
    assert job["result"]["version"] == 1 and job["result"]["metrics"]["model"]["mae"] > 0
    assert job["progress"] == {**job["progress"], "epoch": 1, "epochs": 1}
    assert isinstance(job["result"]["gate"]["reason"], str)
    listed = [job_record["id"] for job_record in empty_client.get("/jobs").json()["jobs"]]
    assert job["id"] in listed
    # The runner refreshed the registry when the job ended: no restart needed.
    ready = empty_client.get("/ready").json()
    assert ready["models"]["jobbed"] == 1


@pytest.mark.tf
def test_failed_job_says_why(empty_client: TestClient) -> None:
    rows = "".join(f"2020-02-{day:02d},1,2,0.5,1.5,10\n" for day in range(1, 29))
    uploaded = empty_client.post(
        "/datasets",
        files={"file": ("s.csv", "Date,Open,High,Low,Close,Volume\n" + rows, "text/csv")},
        data={"name": "tiny28"},
    )
    assert uploaded.status_code == 201, uploaded.text
    # 28 consecutive days: a market that never closes.
    request = {"model": "short", "dataset": "tiny28", "window": 10, "epochs": 1, "calendar": "24/7"}
    short = empty_client.post("/train", json=request)
    job = wait_job(empty_client, short.json()["job_id"], ("succeeded", "failed"))
    assert job["status"] == "failed"
    assert "not enough rows" in job["error"] and "got 28" in job["error"]


@pytest.mark.tf
def test_a_job_whose_calendar_does_not_fit_the_data_fails_naming_the_dates(empty_client: TestClient) -> None:
    rows = "".join(f"2020-02-{day:02d},1,2,0.5,1.5,10\n" for day in range(1, 29))
    uploaded = empty_client.post(
        "/datasets",
        files={"file": ("s.csv", "Date,Open,High,Low,Close,Volume\n" + rows, "text/csv")},
        data={"name": "daily28"},
    )
    assert uploaded.status_code == 201, uploaded.text
    weekly = empty_client.post("/train", json={"model": "daily", "dataset": "daily28", "window": 10, "epochs": 1})
    job = wait_job(empty_client, weekly.json()["job_id"], ("succeeded", "failed"))
    assert job["status"] == "failed"
    assert job["error"].startswith(
        "the data trades on weekends (2020-02-01, 2020-02-02, 2020-02-08, 2020-02-09, 2020-02-15 and 3 more), "
        "so it follows a '24/7' calendar, not XNYS: train with calendar '24/7'"
    )


def test_cancel_queued_and_running_jobs(empty_client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    # The stub child runs until cancelled, as a long training would, without importing TensorFlow.
    monkeypatch.setattr(empty_client.app.state.jobs.runner, "training_entry", stub_training)  # type: ignore[attr-defined]
    long = empty_client.post(
        "/train",
        json={"model": "cancelled", "dataset": "msft", "window": 20, "units": 16, "epochs": 300, "patience": 300},
    ).json()["job_id"]
    queued = empty_client.post("/train", json={"model": "cancelled", "dataset": "msft", **TINY}).json()["job_id"]
    cancelled = empty_client.delete(f"/jobs/{queued}")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    wait_job(empty_client, long, ("running",))
    assert empty_client.delete(f"/jobs/{long}").status_code == 200
    job = wait_job(empty_client, long, ("cancelled", "failed", "succeeded"))
    assert job["status"] == "cancelled", job
    assert empty_client.get("/models/cancelled").status_code == 404  # nothing was saved
    again = empty_client.delete(f"/jobs/{long}")
    assert again.status_code == 409 and "already cancelled" in again.json()["detail"]


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"model": "m", "dataset": "nope"}, 404, "unknown dataset 'nope'"),
        ({"model": "m", "dataset": "msft", "architecture": "transformer"}, 422, "body.architecture"),
        (
            {"model": "m", "dataset": "msft", "window": 1},
            422,
            "body.window: Input should be greater than or equal to 2",
        ),
        (
            {"model": "m", "dataset": "msft", "features": ["open", "volume"]},
            422,
            "label 'close' must be one of the features",
        ),
        ({"model": "m", "dataset": "msft", "epochs": 0}, 422, "body.epochs"),
        ({"model": "m", "dataset": "msft", "learning_rate": -1}, 422, "body.learning_rate"),
        ({"model": "m", "dataset": "msft", "unknown": 1}, 422, "body.unknown: Extra inputs are not permitted"),
        ({"model": "a b", "dataset": "msft"}, 422, "body.model"),
        ({"dataset": "msft"}, 422, "body.model: Field required"),
    ],
)
def test_bad_train_requests(empty_client: TestClient, body: dict[str, Any], status: int, fragment: str) -> None:
    response = empty_client.post("/train", json=body)
    assert response.status_code == status, response.text
    assert fragment in response.json()["detail"]


@pytest.mark.parametrize(
    ("setting", "detail"),
    [
        ({"seed": -1}, "body.seed: Input should be greater than or equal to 0"),
        ({"seed": 10**30}, "body.seed: Input should be less than or equal to 4294967295"),
        ({"backtest_stride": 10**6}, "body.backtest_stride: Input should be less than or equal to 10000"),
        ({"backtest_folds": 21}, "body.backtest_folds: Input should be less than or equal to 20"),
        ({"units": 100_000}, "body.units: Input should be less than or equal to 1024"),
        ({"epochs": 0}, "body.epochs: Input should be greater than or equal to 1"),
        ({"features": []}, "body.features: Tuple should have at least 1 item after validation, not 0"),
        ({"backtest_refit": "never"}, "body.backtest_refit: Input should be 'every' or 'once'"),
    ],
)
def test_a_setting_out_of_bounds_is_a_422_naming_the_bound_and_queues_nothing(
    empty_client: TestClient, setting: dict[str, Any], detail: str
) -> None:
    jobs_before = empty_client.get("/jobs").json()["jobs"]
    response = empty_client.post("/train", json={"model": "m", "dataset": "msft", **setting})
    assert response.status_code == 422, response.text
    assert response.json()["detail"] == detail
    assert empty_client.get("/jobs").json()["jobs"] == jobs_before


def test_train_request_has_every_hyper_parameter_with_the_same_bounds() -> None:
    request_schema = TrainRequest.model_json_schema()["properties"]
    config_schema = TrainConfig.model_json_schema()["properties"]
    assert list(request_schema) == ["model", "dataset", *public_fields()]
    for name in public_fields():
        config_field = {key: value for key, value in config_schema[name].items() if key not in ("default", "title")}
        config_field.pop("description")
        field = request_schema[name]
        assert field["default"] is None
        assert field["anyOf"] == [config_field, {"type": "null"}], name
        assert field["description"].startswith(TrainConfig.model_fields[name].description or "-")
    assert "interval_levels" not in request_schema


def test_unknown_job_is_404(empty_client: TestClient) -> None:
    assert empty_client.get("/jobs/nope").status_code == 404
    assert empty_client.delete("/jobs/nope").status_code == 404
