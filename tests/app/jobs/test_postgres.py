"""Scaled-out mode against the real PostgreSQL: schema, records, routes, the sweeper, and a database outage.

No Keras here: jobs are queued but no queue worker runs them (the end-to-end
test in test_scaleout.py runs real queue workers). Each test uses its own scratch
database, dropped afterwards.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.jobs.postgres import PostgresJobStore
from app.jobs.queue import api_queue, defer_training
from app.jobs.schema import MIGRATIONS, SchemaMissingError, migrate, require_schema
from app.jobs.store import FAILED, JobOutcome
from tests.fakes import fake_app_on
from tests.helpers import TcpRelay, local_client, make_settings, run, scratch_database, wait_until
from training.store import ModelStore

pytestmark = pytest.mark.postgres

TINY = {"window": 10, "units": 4, "epochs": 1, "batch_size": 256}


@pytest.fixture
def database() -> Iterator[str]:
    """A migrated scratch database."""
    with scratch_database() as url:
        yield url


def test_migrate_is_idempotent_and_required() -> None:
    with scratch_database(migrated=False) as url:
        with pytest.raises(SchemaMissingError) as refused:
            require_schema(url)
        names = [migration.name for migration in MIGRATIONS]
        assert str(refused.value) == (
            f"the job database has no stockcast schema (missing migrations: {names}); "
            "run `python -m app migrate` with the same STOCKCAST_DATABASE_URL first"
        )
        assert migrate(url) == names
        assert migrate(url) == []  # procrastinate's own `schema --apply` fails here
        require_schema(url)


def test_api_refuses_to_start_on_a_database_without_the_schema(tmp_path: Path) -> None:
    with scratch_database(migrated=False) as url:
        settings = make_settings(tmp_path / "models", tmp_path / "var", database_url=url)
        with (
            pytest.raises(SchemaMissingError, match=r"run `python -m app migrate`"),
            local_client(fake_app_on(settings)),
        ):
            pass


def test_writes_of_a_superseded_attempt_change_nothing(database: str) -> None:
    store = PostgresJobStore(database, pool_size=1)
    try:
        with store.connection() as connection:
            job_id = store.insert(connection, {"model": "m", "dataset": "d"})
        assert store.mark_running(job_id, attempt=1, worker="a:1")
        assert store.mark_running(job_id, attempt=2, worker="b:2")  # retried elsewhere
        store.set_progress(job_id, {"epoch": 9}, attempt=1)
        store.set_result(job_id, {"version": 9}, attempt=1)
        assert not store.finish(job_id, JobOutcome(FAILED, error="late"), attempt=1)
        store.set_progress(job_id, {"epoch": 1}, attempt=2)
        job = store.get(job_id)
        assert job is not None
        assert (job["status"], job["attempts"], job["worker"], job["progress"], job["result"]) == (
            "running",
            2,
            "b:2",
            {"epoch": 1},
            None,
        )
    finally:
        store.close()


@pytest.fixture
def scaled_client(database: str, tmp_path: Path) -> Iterator[TestClient]:
    """The real app in scaled-out mode, with no worker running (jobs stay queued)."""
    settings = make_settings(tmp_path / "models", tmp_path / "var", database_url=database)
    with local_client(fake_app_on(settings)) as client:
        yield client


def test_routes_enqueue_refuse_a_second_waiting_job_and_cancel(scaled_client: TestClient) -> None:
    first = scaled_client.post("/train", json={"model": "q", "dataset": "msft", **TINY})
    assert first.status_code == 202, first.text
    job_id = first.json()["job_id"]
    second = scaled_client.post("/train", json={"model": "q", "dataset": "msft", **TINY})
    assert second.status_code == 409
    assert second.json() == {
        "detail": f"model 'q' already has a job waiting to start ({job_id}); one job per model may wait: "
        "submit again once it runs, or cancel it"
    }
    other = scaled_client.post("/train", json={"model": "r", "dataset": "msft", **TINY})
    assert other.status_code == 202, other.text
    job = scaled_client.get(f"/jobs/{job_id}").json()
    assert (job["status"], job["attempts"], job["worker"], job["submitted_by"]) == ("queued", 0, None, "anonymous")
    assert [listed["id"] for listed in scaled_client.get("/jobs").json()["jobs"]] == [other.json()["job_id"], job_id]
    cancelled = scaled_client.delete(f"/jobs/{job_id}")
    assert cancelled.status_code == 200
    assert (cancelled.json()["status"], cancelled.json()["error"]) == (
        "cancelled",
        "cancelled by request of key 'anonymous' before it started",
    )
    again = scaled_client.delete(f"/jobs/{job_id}")
    assert again.status_code == 409
    assert again.json() == {"detail": f"job {job_id} already cancelled"}
    # The queueing lock went with the cancelled job: the model takes a new one.
    assert scaled_client.post("/train", json={"model": "q", "dataset": "msft", **TINY}).status_code == 202


def test_ready_reports_the_database_while_it_is_down(database: str, tmp_path: Path) -> None:
    relay = TcpRelay("127.0.0.1", 5432)
    relay.start()
    through_relay = database.replace("127.0.0.1:5432", f"127.0.0.1:{relay.port}")
    settings = make_settings(tmp_path / "models", tmp_path / "var", database_url=through_relay)
    with local_client(fake_app_on(settings)) as client:
        assert client.get("/ready").status_code == 200
        relay.cut()
        down = client.get("/ready")
        assert down.status_code == 503
        assert down.json()["detail"].startswith("the job database is unreachable: ")
        jobs = client.get("/jobs")
        assert jobs.status_code == 503
        assert jobs.json()["detail"].startswith("the job database is unreachable: ")
        relay.start()
        wait_until(lambda: client.get("/ready").status_code == 200, "the API to reconnect", timeout=60)
        assert client.get("/jobs").json() == {"jobs": []}
    relay.cut()


# The sweeper ---------------------------------------------------------------


def sweeper_settings(database: str, tmp_path: Path) -> Settings:
    return make_settings(
        tmp_path / "models", tmp_path / "var", database_url=database, worker_stalled_seconds=4, job_max_attempts=2
    )


def test_sweeper_retries_supersedes_fails_and_leaves_live_jobs_alone(database: str, tmp_path: Path) -> None:
    from app.jobs import queue_task

    settings = sweeper_settings(database, tmp_path)
    records = queue_task.records_for(settings)
    deferrer = api_queue()

    def defer(model: str) -> str:
        with records.connection() as connection, connection.transaction():
            job_id = records.insert(connection, {"model": model, "dataset": "msft"})
            records.link(connection, job_id, defer_training(deferrer, connection, job_id, model))
        return job_id

    async def scenario() -> tuple[list[str], dict[str, str], str]:
        queue = queue_task.build_worker_queue(settings)
        async with queue.open_async():
            dead_worker = await queue.job_manager.register_worker()
            started: dict[str, str] = {}
            for model, attempt in (("retried", 1), ("superseded", 1), ("exhausted", 2), ("alive", 1)):
                job_id = defer(model)
                fetched = await queue.job_manager.fetch_job(queues=None, worker_id=dead_worker)
                assert fetched is not None and fetched.task_kwargs == {"job_id": job_id}
                assert records.mark_running(job_id, attempt, "gone:1")
                started[model] = job_id
            newer = defer("superseded")  # waits under the queueing lock of the stalled one
            with psycopg.connect(database, autocommit=True) as connection:
                # A worker killed an hour ago: no heartbeat since, and its jobs' records untouched
                # except the one whose runner still writes (a draining worker, not a dead one).
                connection.execute(
                    "UPDATE procrastinate_workers SET last_heartbeat = now() - interval '1 hour' WHERE id = %s",
                    (dead_worker,),
                )
                connection.execute(
                    "UPDATE stockcast_jobs SET updated_at = now() - interval '1 hour' WHERE id <> %s",
                    (started["alive"],),
                )
            outcomes = await queue_task.sweep(queue, settings)
            again = await queue_task.sweep(queue, settings)
            assert again == []
            return outcomes, started, newer

    try:
        outcomes, started, newer = run(scenario())
        lost = "stopped: its worker gone:1 sent no heartbeat for 4 s (killed, or cut off from the database)"
        expected = {
            "retried": ("queued", f"attempt 1 of 2 {lost}; retrying: attempt 2 of 2 is queued"),
            "superseded": (
                "failed",
                f"attempt 1 of 2 {lost}; not retried: a newer job of model 'superseded' ({newer}) waits and "
                "supersedes it",
            ),
            "exhausted": ("failed", f"attempt 2 of 2 {lost}; no attempts left, no version was saved. Submit it again"),
            "alive": ("running", None),
        }
        for model, (status, error) in expected.items():
            job: dict[str, Any] | None = records.get(started[model])
            assert job is not None
            assert (job["status"], job["error"]) == (status, error), model
        swept = ("retried", "superseded", "exhausted")
        assert sorted(outcomes) == sorted(f"{started[model]}: {expected[model][1]}" for model in swept)
        with psycopg.connect(database, autocommit=True) as connection:
            statuses = dict(
                connection.execute(
                    "SELECT r.model, j.status FROM stockcast_jobs r JOIN procrastinate_jobs j ON j.id = r.queue_job_id "
                    "WHERE r.id = ANY(%s)",
                    (list(started.values()),),
                ).fetchall()
            )
        assert statuses == {"retried": "todo", "superseded": "failed", "exhausted": "failed", "alive": "doing"}
    finally:
        records.close()
        queue_task.worker_records.cache_clear()


def test_an_alias_moved_on_one_replica_reaches_the_other_by_notify(
    database: str, model_store: ModelStore, tmp_path: Path
) -> None:
    store = ModelStore(tmp_path / "models")
    shutil.copytree(model_store.root / "tiny", store.root / "tiny")
    # Replicas poll the store every 10 minutes here: only the notice can move the other one in time.
    apps = [
        fake_app_on(make_settings(store.root, tmp_path / f"var{index}", database_url=database, refresh_seconds=600))
        for index in range(2)
    ]
    with local_client(apps[0]) as first, local_client(apps[1]) as second:
        assert [client.get("/ready").json()["models"]["tiny"] for client in (first, second)] == [1, 1]
        moved = first.put("/models/tiny/aliases/champion", json={"version": 2, "reason": "roll forward"})
        assert moved.status_code == 200, moved.text
        wait_until(lambda: second.get("/ready").json()["models"]["tiny"] == 2, "the other replica to serve v2", 60)


def test_migrate_creates_the_first_keys_once_for_every_replica(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.__main__ import migrate_command
    from app.core.keys import digest_of, read_keys

    with scratch_database(migrated=False) as url:
        settings = Settings(data_dir=tmp_path, database_url=url, create_keys_on_first_start=True)
        assert migrate_command(settings) == 0
        printed = {line.split()[0]: line.split()[-1] for line in capsys.readouterr().out.splitlines()[2:4]}
        stored = {key.name: key.digest for key in read_keys(settings.keys_file)}
        assert stored == {"admin": digest_of(printed["admin"]), "predict": digest_of(printed["predict"])}
        assert migrate_command(settings) == 0
        assert capsys.readouterr().out == "stockcast: the job database is up to date\n"
