"""/datasets: upload, report, and a precise 4xx for every bad file."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

YAHOO = (
    "Date,Open,High,Low,Close,Adj Close,Volume\n"
    + "".join(
        f"2020-01-{day:02d},{100 + day},{101 + day},{99 + day},{100.5 + day},{100.5 + day},{1000 * day}\n"
        for day in range(2, 30)
    )
    + "2020-01-30,null,null,null,null,null,null\n"
)


def test_sample_dataset_is_registered_at_start(empty_client: TestClient) -> None:
    listed = {dataset["name"]: dataset for dataset in empty_client.get("/datasets").json()["datasets"]}
    # The list reads the report's own fields: asking for keys the report lacks would show nulls.
    assert listed["msft"] == {
        "name": "msft",
        "filename": "msft.csv",
        "rows": 7983,
        "start": "1986-03-13",
        "end": "2017-11-10",
        "uploaded_at": listed["msft"]["uploaded_at"],
    }
    report = empty_client.get("/datasets/msft").json()
    assert report["rows_kept"] == 7983 and report["date_range"]["start"] == "1986-03-13"


def test_upload_returns_the_data_report(empty_client: TestClient) -> None:
    response = empty_client.post("/datasets", files={"file": ("x.csv", YAHOO, "text/csv")}, data={"name": "jan"})
    assert response.status_code == 201, response.text
    report = response.json()
    assert report["rows_read"] == 29 and report["rows_kept"] == 28
    assert report["rows_dropped"]["missing_values"] == 1
    assert "adj_close" in report["columns"]
    again = empty_client.post("/datasets", files={"file": ("x.csv", YAHOO, "text/csv")}, data={"name": "jan"})
    assert again.status_code == 409 and "overwrite=true" in again.json()["detail"]
    replaced = empty_client.post(
        "/datasets", files={"file": ("x.csv", YAHOO, "text/csv")}, data={"name": "jan", "overwrite": "true"}
    )
    assert replaced.status_code == 201


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("Date,Open,High,Low,Volume\n2020-01-02,1,2,0.5,10\n", "missing column(s) ['close']"),
        (
            "Date,Open,High,Low,Close,Volume\n2020-01-02,1,2,0.5,abc,10\n",
            "column 'close' has values that are not numbers on CSV line(s) 2",
        ),
        ("Date,Open,High,Low,Close,Volume\nyesterday,1,2,0.5,1,10\n", "not dates on CSV line(s) 2"),
        ("Date,Open,High,Low,Close,Volume\n", "no data rows"),
        ("", "not a readable CSV"),
    ],
)
def test_bad_csv_is_422_with_the_reason(empty_client: TestClient, content: str, fragment: str) -> None:
    response = empty_client.post("/datasets", files={"file": ("bad.csv", content, "text/csv")}, data={"name": "bad"})
    assert response.status_code == 422, response.text
    assert fragment in response.json()["detail"]
    assert "bad" not in [dataset["name"] for dataset in empty_client.get("/datasets").json()["datasets"]]


def test_upload_form_errors(empty_client: TestClient) -> None:
    no_file = empty_client.post("/datasets", data={"name": "x"})
    assert no_file.status_code == 422 and "body.file: Field required" in no_file.json()["detail"]
    bad_name = empty_client.post("/datasets", files={"file": ("x.csv", YAHOO, "text/csv")}, data={"name": "../x"})
    assert bad_name.status_code == 422 and "invalid dataset name" in bad_name.json()["detail"]


def test_unknown_dataset_is_404(empty_client: TestClient) -> None:
    response = empty_client.get("/datasets/nope")
    assert response.status_code == 404 and "unknown dataset 'nope'" in response.json()["detail"]
