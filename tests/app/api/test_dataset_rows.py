"""POST /datasets/{name}/rows over real HTTP into the real app: one test per outcome, status and detail."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from app.core.keys import create_key
from tests.fakes import fake_app
from tests.helpers import assert_documented, local_client, price_csv, price_row, session_rows

# Ten XNYS sessions, 2024-12-02 to 2024-12-13, uploaded fresh for each test under its own name.
UPLOAD = price_csv(session_rows("2024-12-02", 10))


class Keys:
    """An admin key `ops` and a predict key `desk`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.admin = {"Authorization": f"Bearer {create_key(path, 'ops', 'admin')}"}
        self.predict = {"Authorization": f"Bearer {create_key(path, 'desk', 'predict')}"}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    """The module app's keys."""
    return Keys(tmp_path_factory.mktemp("keys") / "api_keys.json")


@pytest.fixture(scope="module")
def app_client(keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The real app (fake inference, no models) with keys, a rate limit that never bites here."""
    app = fake_app(
        tmp_path_factory.mktemp("models"),
        tmp_path_factory.mktemp("var"),
        api_keys_file=keys.path,
        mutations_per_minute=1000,
    )
    with local_client(app) as client:
        yield client


@pytest.fixture
def dataset(app_client: TestClient, keys: Keys, request: pytest.FixtureRequest) -> str:
    """A dataset named after the test, freshly uploaded."""
    name = request.node.name.removeprefix("test_")[:60].replace("[", "-").rstrip("]")
    response = app_client.post(
        "/datasets", files={"file": ("d.csv", UPLOAD, "text/csv")}, data={"name": name}, headers=keys.admin
    )
    assert response.status_code == 201, response.text
    return name


def append(client: TestClient, keys: Keys, name: str, body: dict[str, Any]) -> httpx.Response:
    return client.post(f"/datasets/{name}/rows", json=body, headers=keys.admin)


def test_one_row_is_appended(app_client: TestClient, keys: Keys, dataset: str) -> None:
    response = append(app_client, keys, dataset, {"rows": [price_row("2024-12-16", 120.0)]})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer | {"sha256": None} == {
        "dataset": dataset,
        "rows_added": 1,
        "rows_replaced": 0,
        "unchanged": 0,
        "added_dates": ["2024-12-16"],
        "replaced_dates": [],
        "first_new_date": "2024-12-16",
        "last_new_date": "2024-12-16",
        "previous_last_date": "2024-12-13",
        "last_date": "2024-12-16",
        "rows": 11,
        "sha256": None,
        "calendar": "XNYS",
        "missing_sessions": [],
        "corrections": [],
        "skipped": [],
        "zero_volume": [],
        "ignored_columns": [],
        "scored_forecasts": 0,
        "scoring": "done",
    }
    report = app_client.get(f"/datasets/{dataset}", headers=keys.predict).json()
    assert (report["rows_kept"], report["sha256"], report["appended_by"]) == (11, answer["sha256"], "ops")
    assert_documented(app_client.get("/openapi.json").json(), "post", "/datasets/{name}/rows", 200, answer)


def test_a_retry_answers_200_and_changes_nothing(app_client: TestClient, keys: Keys, dataset: str) -> None:
    body = {"rows": [price_row("2024-12-16", 120.0)]}
    first = append(app_client, keys, dataset, body).json()
    again = append(app_client, keys, dataset, body)
    assert again.status_code == 200
    assert (again.json()["rows_added"], again.json()["unchanged"]) == (0, 1)
    assert again.json()["sha256"] == first["sha256"]


def test_a_conflicting_value_is_409_naming_the_date(app_client: TestClient, keys: Keys, dataset: str) -> None:
    before = app_client.get(f"/datasets/{dataset}", headers=keys.predict).json()["sha256"]
    response = append(app_client, keys, dataset, {"rows": [{**price_row("2024-12-13", 109.0), "Close": 110.5}]})
    assert response.status_code == 409
    assert response.json() == {
        "detail": f"2024-12-13 is in dataset '{dataset}' with other values (close 109 there, 110.5 here): these rows"
        " change history; send replace=true to write them (they are logged). Nothing was appended"
    }
    assert app_client.get(f"/datasets/{dataset}", headers=keys.predict).json()["sha256"] == before
    assert_documented(app_client.get("/openapi.json").json(), "post", "/datasets/{name}/rows", 409, response.json())


def test_replace_is_logged_with_old_new_and_the_key(app_client: TestClient, keys: Keys, dataset: str) -> None:
    row = {**price_row("2024-12-13", 109.0), "Close": 110.5}
    response = append(app_client, keys, dataset, {"rows": [row], "replace": True})
    assert response.status_code == 200, response.text
    (correction,) = response.json()["corrections"]
    assert correction["date"] == "2024-12-13" and correction["by"] == "ops"
    assert (correction["old"]["close"], correction["new"]["close"]) == (109.0, 110.5)
    logged = app_client.app.state.datasets.corrections(dataset)  # type: ignore[attr-defined]
    assert logged == [{**correction, "sha256": response.json()["sha256"]}]


def test_a_bad_row_is_422_and_nothing_is_written(app_client: TestClient, keys: Keys, dataset: str) -> None:
    csv_path = app_client.app.state.datasets.csv_path(dataset)  # type: ignore[attr-defined]
    before = csv_path.read_bytes()
    rows = [price_row("2024-12-16"), {**price_row("2024-12-17"), "Volume": "lots"}]
    response = append(app_client, keys, dataset, {"rows": rows})
    assert response.status_code == 422
    assert response.json() == {
        "detail": "column 'volume' has values that are not numbers on row(s) 1 (2024-12-17) (e.g. 'lots')"
    }
    assert csv_path.read_bytes() == before
    assert_documented(app_client.get("/openapi.json").json(), "post", "/datasets/{name}/rows", 422, response.json())


def test_a_csv_body_with_replace_in_the_query(app_client: TestClient, keys: Keys, dataset: str) -> None:
    body = price_csv([price_row("2024-12-16", 120.0), price_row("2024-12-13", 50.0)])
    response = app_client.post(
        f"/datasets/{dataset}/rows",
        content=body,
        params={"replace": "true"},
        headers={**keys.admin, "content-type": "text/csv; charset=utf-8"},
    )
    assert response.status_code == 200, response.text
    assert (response.json()["added_dates"], response.json()["replaced_dates"]) == (["2024-12-16"], ["2024-12-13"])


def test_a_gap_is_reported_as_missing_sessions(app_client: TestClient, keys: Keys, dataset: str) -> None:
    response = append(app_client, keys, dataset, {"rows": [price_row("2024-12-19")]})
    assert response.json()["missing_sessions"] == ["2024-12-16", "2024-12-17", "2024-12-18"]


def test_two_concurrent_requests_both_land(app_client: TestClient, keys: Keys, dataset: str) -> None:
    start = threading.Barrier(2)
    answers: list[httpx.Response] = []

    def send(day: str) -> None:
        start.wait()
        # replace=true: whichever lands second is a logged fill if it is the earlier date.
        answers.append(append(app_client, keys, dataset, {"rows": [price_row(day)], "replace": True}))

    threads = [threading.Thread(target=send, args=(day,)) for day in ("2024-12-16", "2024-12-17")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answer.status_code for answer in answers) == [200, 200]
    report = app_client.get(f"/datasets/{dataset}", headers=keys.predict).json()
    assert (report["rows_kept"], report["date_range"]["end"]) == (12, "2024-12-17")


@pytest.mark.parametrize(
    ("path", "kwargs", "status", "detail"),
    [
        ("/datasets/nope/rows", {"json": {"rows": [price_row("2024-12-16")]}}, 404, "unknown dataset 'nope'"),
        ("/datasets/..x/rows", {"json": {"rows": [price_row("2024-12-16")]}}, 422, "invalid dataset name"),
        ("/datasets/msft/rows", {"json": {"rows": []}}, 422, "body.rows: List should have at least 1 item"),
        ("/datasets/msft/rows", {"data": {"rows": "x"}}, 415, "content type 'application/x-www-form-urlencoded'"),
        ("/datasets/msft/rows", {"json": {"rows": [price_row("2024-12-16")], "calendar": "MOON"}}, 422, "'MOON'"),
    ],
    ids=["unknown-dataset", "bad-name", "no-rows", "form-body", "unknown-calendar"],
)
def test_refusals(
    app_client: TestClient, keys: Keys, path: str, kwargs: dict[str, Any], status: int, detail: str
) -> None:
    response = app_client.post(path, headers=keys.admin, **kwargs)
    assert response.status_code == status, response.text
    assert detail in response.json()["detail"]


def test_a_predict_key_may_not_append(app_client: TestClient, keys: Keys) -> None:
    response = app_client.post("/datasets/msft/rows", json={"rows": [price_row("2024-12-16")]}, headers=keys.predict)
    assert response.status_code == 403
    assert response.json() == {
        "detail": "the key 'desk' has scope 'predict'; POST /datasets/msft/rows needs a key with scope 'admin'"
    }


def test_a_body_over_the_request_limit_is_413(tmp_path: Path) -> None:
    # Not started: the gateway refuses a declared length before the route (or the lifespan) is needed.
    client = local_client(fake_app(tmp_path / "models", tmp_path / "var", max_request_bytes=1024))
    response = client.post("/datasets/msft/rows", content=b"x" * 2048, headers={"content-type": "text/csv"})
    assert response.status_code == 413
    assert response.json() == {"detail": "request body is larger than the 1024 byte limit for /datasets/msft/rows"}


def test_openapi_documents_both_bodies(app_client: TestClient) -> None:
    operation = app_client.get("/openapi.json").json()["paths"]["/datasets/{name}/rows"]["post"]
    content = operation["requestBody"]["content"]
    assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/AppendRowsRequest"}
    assert set(content["application/json"]["examples"]) == {"one_day", "correction"}
    assert content["text/csv"]["example"].startswith("Date,Open,High,Low,Close,Volume\n")
    assert "Needs a key with scope `admin`." in operation["description"]
