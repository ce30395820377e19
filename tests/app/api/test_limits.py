"""Limits: body size on every route, changes per key, foreign web origins, and the training queue."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.helpers import local_client, make_settings, queueing_client

CSV = "Date,Open,High,Low,Close,Volume\n2020-01-02,1,2,0.5,1.5,100\n"


def unstarted(tmp_path: Path, **overrides: object) -> TestClient:
    """The real app, not started: enough for answers the gateway gives before any route runs."""
    from app.main import create_app

    return local_client(create_app(make_settings(tmp_path / "models", tmp_path / "var", **overrides)))


def test_a_declared_body_over_the_limit_is_413_before_it_is_read(tmp_path: Path) -> None:
    client = unstarted(tmp_path, max_request_bytes=1024)
    response = client.post("/predict", content=b"x" * 2000, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json() == {"detail": "request body is larger than the 1024 byte limit for /predict"}


def test_an_undeclared_body_is_counted_as_it_arrives(tmp_path: Path) -> None:
    client = unstarted(tmp_path, max_request_bytes=1024)
    # A generator body goes out chunked, without Content-Length; the gateway reads it for its direct answer.
    response = client.post("/predict", content=(b"x" * 600 for _ in range(3)))
    assert response.status_code == 413
    assert response.json() == {"detail": "request body is larger than the 1024 byte limit for /predict"}


def test_uploads_get_the_upload_limit(tmp_path: Path) -> None:
    client = unstarted(tmp_path, max_upload_bytes=1024)
    response = client.post("/datasets", content=b"x" * (1024 + 1024 * 1024 + 1))
    assert response.status_code == 413
    assert response.json() == {
        "detail": f"request body is larger than the {1024 + 1024 * 1024} byte limit for /datasets"
    }


def test_changes_are_rate_limited_per_caller(tmp_path: Path) -> None:
    client = unstarted(tmp_path, mutations_per_minute=3)
    # Reads are not counted; an unknown path still counts as a change (it is not a read).
    assert client.get("/nothing").status_code == 404
    assert [client.delete("/nothing").status_code for _ in range(3)] == [404, 404, 404]
    response = client.delete("/nothing")
    assert response.status_code == 429
    assert response.json() == {"detail": "rate limit: at most 3 changes a minute per key; see Retry-After"}
    assert 1 <= int(response.headers["retry-after"]) <= 20


def test_a_foreign_origin_cannot_upload(tmp_path: Path) -> None:
    client = unstarted(tmp_path)
    upload = {"files": {"file": ("x.csv", CSV, "text/csv")}, "data": {"name": "x"}}
    response = client.post("/datasets", headers={"Origin": "http://evil.example"}, **upload)  # type: ignore[arg-type]
    assert response.status_code == 403
    assert response.json() == {
        "detail": "cross-origin request refused: Origin 'http://evil.example' may not call POST /datasets;"
        " list it in STOCKCAST_CORS_ORIGINS to allow it"
    }
    # The service's own pages, and origins listed in the setting, may.
    assert client.delete("/nothing", headers={"Origin": "http://localhost"}).status_code == 404
    allowed = unstarted(tmp_path, cors_origins=["https://desk.example"])
    assert allowed.delete("/nothing", headers={"Origin": "https://desk.example"}).status_code == 404
    assert "access-control-allow-origin" not in client.get("/nothing", headers={"Origin": "http://x"}).headers


@pytest.fixture(scope="module")
def queue_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """A started app (fake inference) whose job runner is stopped, so jobs stay queued."""
    with queueing_client(tmp_path_factory.mktemp("models"), tmp_path_factory.mktemp("var"), max_queued_jobs=2) as c:
        yield c


def test_the_queue_of_jobs_is_bounded(queue_client: TestClient) -> None:
    request = {"model": "queued", "dataset": "msft", "epochs": 1}
    accepted = [queue_client.post("/train", json=request) for _ in range(2)]
    assert [response.status_code for response in accepted] == [202, 202]
    job = queue_client.get(accepted[0].json()["location"]).json()
    assert job["status"] == "queued" and job["submitted_by"] == "anonymous"
    refused = queue_client.post("/train", json=request)
    assert refused.status_code == 429
    assert refused.json() == {
        "detail": "2 training jobs are waiting to start, the most the queue holds (STOCKCAST_MAX_QUEUED_JOBS);"
        " retry once one has started"
    }
    assert refused.headers["retry-after"] == "60"
    cancelled = queue_client.delete(accepted[1].json()["location"])
    assert cancelled.json()["error"] == "cancelled by request of key 'anonymous' before it started"
    assert queue_client.post("/train", json=request).status_code == 202
