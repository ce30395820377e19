"""Scaled out, appends to one dataset take turns through a PostgreSQL advisory lock, replica by replica.

Each `PostgresJobStore` here stands for one API replica's pool; the file
lock is free throughout, so only the advisory lock can hold an append back.
The last test checks the app takes it on POST /datasets/{name}/rows.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from app.datasets import DatasetStore
from app.jobs.postgres import LockBusyError, PostgresJobStore
from tests.fakes import fake_app_on
from tests.helpers import (
    local_client,
    make_settings,
    price_csv,
    price_row,
    scratch_database,
    session_rows,
    wait_until,
)

pytestmark = pytest.mark.postgres


@pytest.fixture
def database() -> Iterator[str]:
    """A scratch database (advisory locks need no schema)."""
    with scratch_database(migrated=False) as url:
        yield url


def waiting_advisory_locks(url: str) -> int:
    """Advisory lock requests on the database that wait for another holder."""
    with psycopg.connect(url) as connection:
        row = connection.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted").fetchone()
    assert row is not None
    return int(row[0])


def test_an_append_waits_for_another_replica_s_lock(database: str, tmp_path: Path) -> None:
    holder, appender = PostgresJobStore(database, pool_size=1), PostgresJobStore(database, pool_size=1)
    try:
        datasets = DatasetStore(tmp_path, shared_lock=appender.advisory_lock)
        datasets.save("d", price_csv(session_rows("2024-12-02", 5)), "d.csv")
        done: list[Any] = []
        with holder.advisory_lock("dataset:d"):
            worker = threading.Thread(target=lambda: done.append(datasets.append("d", [price_row("2024-12-09")])))
            worker.start()
            wait_until(lambda: waiting_advisory_locks(database) == 1, "the append to wait for the lock", timeout=30)
            assert done == []
        worker.join()
        assert done[0].added_dates == ["2024-12-09"]
        # Another dataset's lock is another key: no wait.
        with holder.advisory_lock("dataset:other"):
            assert datasets.append("d", [price_row("2024-12-10")]).added_dates == ["2024-12-10"]
    finally:
        holder.close()
        appender.close()


def test_a_lock_held_too_long_is_a_503(database: str) -> None:
    holder, waiter = PostgresJobStore(database, pool_size=1), PostgresJobStore(database, pool_size=1)
    try:
        with (
            holder.advisory_lock("dataset:d"),
            pytest.raises(LockBusyError) as busy,
            waiter.advisory_lock("dataset:d", wait_seconds=0.2),
        ):
            pass
        assert busy.value.status_code == 503
        assert str(busy.value) == "'dataset:d' is being changed by another request; retry shortly"
        # Released with its transaction: the pooled connection goes back without it.
        with waiter.advisory_lock("dataset:d", wait_seconds=0.2):
            pass
    finally:
        holder.close()
        waiter.close()


def test_the_scaled_out_app_appends_under_the_advisory_lock(tmp_path: Path) -> None:
    with scratch_database() as url:
        settings = make_settings(tmp_path / "models", tmp_path / "var", database_url=url)
        holder = PostgresJobStore(url, pool_size=1)
        try:
            with local_client(fake_app_on(settings)) as client:
                upload = {"file": ("d.csv", price_csv(session_rows("2024-12-02", 5)))}
                assert client.post("/datasets", files=upload, data={"name": "d"}).status_code == 201
                answers: list[Any] = []
                with holder.advisory_lock("dataset:d"):
                    worker = threading.Thread(
                        target=lambda: answers.append(
                            client.post("/datasets/d/rows", json={"rows": [price_row("2024-12-09")]})
                        )
                    )
                    worker.start()
                    wait_until(lambda: waiting_advisory_locks(url) == 1, "the append to wait for the lock", timeout=30)
                    assert answers == []
                worker.join()
                assert answers[0].status_code == 200, answers[0].text
                assert answers[0].json()["added_dates"] == ["2024-12-09"]
        finally:
            holder.close()
