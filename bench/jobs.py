"""Scaled-out training throughput: the same batch of small jobs through 1 and then 2 `app.worker` processes.

Each run gets a fresh database on the PostgreSQL server, a fresh model store
and data folder, and starts its workers before the clock starts (they are
waiting on the queue); the clock runs from the first job queued to the last
job succeeded. Jobs are for different models, so procrastinate's per-model
lock never serialises them. The ratio (1 worker's wall time over 2 workers')
is what a second worker buys on this machine; on one host the workers share
its cores, so it stays below 2.

    python bench/jobs.py [--jobs 4] [--epochs 2] [--database-url postgresql://postgres@127.0.0.1:5432/test] [--json OUT]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness import add_json_option, write_json  # noqa: E402 (after the repository joins sys.path)

SAMPLE = ROOT / "data" / "sample" / "msft.csv"


def scratch_database(maintenance_url: str) -> str:
    """Create an empty database next to `maintenance_url`'s; returns its URL."""
    import psycopg

    name = f"stockcast_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(maintenance_url, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return maintenance_url.rsplit("/", 1)[0] + f"/{name}"


def drop_database(maintenance_url: str, url: str) -> None:
    """Drop a database made by `scratch_database`."""
    import psycopg

    with psycopg.connect(maintenance_url, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")


def registered_workers(url: str) -> int:
    """Workers that have registered with procrastinate."""
    import psycopg

    with psycopg.connect(url) as connection:
        row = connection.execute("SELECT count(*) FROM procrastinate_workers").fetchone()
    return int(row[0]) if row else 0


def run_batch(maintenance_url: str, workers: int, jobs: int, epochs: int) -> float:
    """Wall seconds for `jobs` jobs through `workers` worker processes."""
    from app.core.config import Settings
    from app.datasets import DatasetStore
    from app.jobs.backend import PostgresJobs
    from app.jobs.schema import migrate
    from app.jobs.store import Submission

    url = scratch_database(maintenance_url)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        migrate(url)
        with tempfile.TemporaryDirectory(prefix="stockcast-bench-jobs-") as home:
            settings = Settings(
                models_dir=Path(home) / "models", data_dir=Path(home) / "var", database_url=url, bootstrap=False
            )
            DatasetStore(settings.datasets_dir).save("msft", SAMPLE.read_bytes(), SAMPLE.name)
            env = {
                **os.environ,
                "STOCKCAST_DATABASE_URL": url,
                "STOCKCAST_MODELS_DIR": str(settings.models_dir),
                "STOCKCAST_DATA_DIR": str(settings.data_dir),
                "STOCKCAST_LOG_LEVEL": "warning",
                "STOCKCAST_ABORT_POLL_SECONDS": "0.5",
                "TF_CPP_MIN_LOG_LEVEL": "3",
                "PYTHONPATH": str(ROOT),
            }
            log = open(Path(home) / "workers.log", "ab")  # noqa: SIM115 - closed with the processes
            for _ in range(workers):
                processes.append(
                    subprocess.Popen([sys.executable, "-m", "app.worker"], cwd=ROOT, env=env, stdout=log, stderr=log)
                )
            deadline = time.monotonic() + 120
            while registered_workers(url) < workers:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"workers did not register: {(Path(home) / 'workers.log').read_text()[-2000:]}")
                time.sleep(0.2)

            async def ignore(*_: Any) -> Any:
                return None

            backend = PostgresJobs(settings, ignore)
            request = {"dataset": "msft", "window": 10, "units": 4, "epochs": epochs, "batch_size": 256}
            request["backtest_folds"] = 0
            started = time.monotonic()
            ids = [
                backend.submit(Submission({"model": f"bench{index}", **request}, max_queued=jobs))[0]["id"]
                for index in range(jobs)
            ]
            while True:
                statuses = [backend.get(job_id)["status"] for job_id in ids]  # type: ignore[index]
                if any(status in ("failed", "cancelled") for status in statuses):
                    raise RuntimeError(f"a job did not succeed: {backend.list()}")
                if all(status == "succeeded" for status in statuses):
                    break
                time.sleep(0.2)
            elapsed = time.monotonic() - started
            backend.store.close()
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(timeout=60)
            log.close()
            return elapsed
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
        drop_database(maintenance_url, url)


def main() -> int:
    """Run the batch through 1 then 2 workers and print the table and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=4, help="jobs in the batch, one model each")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per job (tiny LSTM, window 10, 4 units)")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("STOCKCAST_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"),
        help="any database of the server; scratch databases are created beside it and dropped",
    )
    add_json_option(parser)
    arguments = parser.parse_args()
    print(f"command: python bench/jobs.py --jobs {arguments.jobs} --epochs {arguments.epochs}")
    print(f"machine: {os.cpu_count()} CPU cores (shared with whatever else runs)")
    timings = {}
    for workers in (1, 2):
        timings[workers] = run_batch(arguments.database_url, workers, arguments.jobs, arguments.epochs)
        print(f"  {workers} worker(s): {arguments.jobs} jobs in {timings[workers]:7.1f} s", flush=True)
    print("\n| workers | wall s | jobs/min |\n|---|---|---|")
    for workers, seconds in timings.items():
        print(f"| {workers} | {seconds:.1f} | {60 * arguments.jobs / seconds:.1f} |")
    print(f"\nratio 1 worker / 2 workers: {timings[1] / timings[2]:.2f}x")
    write_json(
        arguments.json,
        sys.argv,
        {
            "jobs": arguments.jobs,
            "epochs": arguments.epochs,
            "cpu_count": os.cpu_count(),
            "wall_seconds": {str(workers): seconds for workers, seconds in timings.items()},
            "ratio_1_to_2_workers": timings[1] / timings[2],
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
