"""`python -m app`: make sure a model is there to serve, check who may call it, then start uvicorn.

`python -m app migrate` instead creates or upgrades the PostgreSQL schema of scaled-out mode
(STOCKCAST_DATABASE_URL) and exits; run it before the APIs and queue workers start, as often as you like.
On a fresh clone the store is empty, so the first start trains the sample model (a progress bar per
epoch) before the API comes up; later starts go straight to serving. `keys create|list|revoke` manage
the API keys (`app/core/keys.py`); `datasets append NAME FILE.csv` appends rows as POST
/datasets/{name}/rows does; `schedule set|show|delete|list` manage retraining schedules as
/models/{name}/schedule does; `export-onnx [NAME [VERSION]]` writes and checks model.onnx for versions
trained without one. See docs/design.md, "Service".
"""

from __future__ import annotations

import argparse
import getpass
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from app.api.auth import is_loopback
from app.api.connections import connection_limits, guarded_protocol
from app.core.config import Settings, get_settings
from app.core.keys import ADMIN, PREDICT, SCOPES, create_key, read_keys, revoke_key, summary
from app.core.logging import configure_logging
from app.core.stores import model_store
from training.config import describe_errors
from training.errors import StockcastError


class AccessRefusedError(StockcastError):
    """Starting would expose the service to the network without keys."""


def bootstrap_command(settings: Settings) -> list[str]:
    """The training CLI call that builds the sample model."""
    return [
        sys.executable,
        "-m",
        "training",
        "train",
        "--data",
        str(settings.sample_data),
        "--name",
        settings.bootstrap_model,
        "--models-dir",
        str(settings.models_dir),
        "--epochs",
        str(settings.bootstrap_epochs),
        "--backtest-folds",
        str(settings.bootstrap_backtest_folds),
    ]


def ensure_sample_model(settings: Settings) -> None:
    """Train the sample model when the store has no version of it yet."""
    if not settings.bootstrap or model_store(settings).versions(settings.bootstrap_model):
        return
    if not settings.sample_data.is_file():
        print(f"stockcast: no sample data at {settings.sample_data}; starting with an empty store", file=sys.stderr)
        return
    if importlib.util.find_spec("tensorflow") is None:
        # A serve-only install (no `train` extra) serves what others trained; it cannot train.
        print("stockcast: TensorFlow is not installed (serve-only); starting with an empty store", file=sys.stderr)
        return
    print(f"stockcast: the store is empty; training '{settings.bootstrap_model}' on {settings.sample_data} first")
    # A separate process, so the API process starts without training state.
    subprocess.run(bootstrap_command(settings), check=True)


def create_first_keys(path: Path) -> list[str]:
    """Create an `admin` and a `predict` key; the lines that show them, this once."""
    admin = create_key(path, "admin", ADMIN)
    predict = create_key(path, "predict", PREDICT)
    return [
        f"stockcast: no API keys found; created two in {path} (shown this once, only their hashes are kept):",
        f"    admin   (scope admin):   {admin}",
        f"    predict (scope predict): {predict}",
        "  Send one as 'Authorization: Bearer <key>'. Manage keys with `python -m app keys list|create|revoke`.",
    ]


def check_access(settings: Settings) -> list[str]:
    """Decide who may call the service before it listens; the lines to print, or AccessRefusedError.

    With keys: every route but /health, /ready and the docs needs one. Without
    keys: open on loopback (the quick start); open to the network only when
    `allow_anonymous` says so; else keys are created now and printed once, or
    the start is refused.
    """
    path = settings.keys_file
    keys = read_keys(path)
    if keys:
        return [f"stockcast: {len(keys)} API key(s) in {path}; requests need 'Authorization: Bearer <key>'"]
    if is_loopback(settings.host):
        return [
            f"stockcast: OPEN: no API keys in {path}, so anyone on this machine may call every route;"
            f" serving on {settings.host} only. Create keys with `python -m app keys create NAME --scope admin`."
        ]
    if settings.allow_anonymous:
        return [
            f"stockcast: WARNING: OPEN to the network on {settings.host}: no API keys and STOCKCAST_ALLOW_ANONYMOUS"
            " is set, so anyone who reaches the port may train, overwrite datasets and move aliases."
        ]
    if settings.create_keys_on_first_start:
        return create_first_keys(path)
    raise AccessRefusedError(
        f"refusing to serve on {settings.host} without API keys: anyone who reaches the port could train, overwrite"
        " datasets and move aliases. Create a key (`python -m app keys create NAME --scope admin`), or set"
        " STOCKCAST_CREATE_KEYS_ON_FIRST_START=true to have keys created and printed once, or"
        " STOCKCAST_ALLOW_ANONYMOUS=true to serve everyone, or bind to 127.0.0.1."
    )


def migrate_command(settings: Settings) -> int:
    """Apply the missing migrations of the job database; 2 when there is no database to migrate.

    With `create_keys_on_first_start` and no keys yet, it also creates the
    first keys: this one-shot step runs before every API replica of the
    scaled topology, so the replicas find keys instead of racing to create them.
    """
    if not settings.database_url:
        print("stockcast: STOCKCAST_DATABASE_URL is not set; embedded mode needs no migration", file=sys.stderr)
        return 2
    from app.jobs.schema import migrate

    applied = migrate(settings.database_url)
    print(f"stockcast: applied {applied}" if applied else "stockcast: the job database is up to date")
    if settings.create_keys_on_first_start and not read_keys(settings.keys_file):
        for line in create_first_keys(settings.keys_file):
            print(line, flush=True)
    return 0


def keys_command(settings: Settings, arguments: argparse.Namespace) -> int:
    """`keys create|list|revoke`."""
    path = settings.keys_file
    try:
        if arguments.action == "create":
            key = create_key(path, arguments.name, arguments.scope)
            print(f"created key '{arguments.name}' (scope {arguments.scope}) in {path}; it is shown this once:")
            print(key)
        elif arguments.action == "revoke":
            revoke_key(path, arguments.name)
            print(f"revoked key '{arguments.name}'; a running service refuses it within a second")
        else:
            print(json.dumps(summary(read_keys(path)), indent=2))
    except StockcastError as error:
        print(f"stockcast: {error}", file=sys.stderr)
        return 2
    return 0


def datasets_command(settings: Settings, arguments: argparse.Namespace) -> int:
    """`datasets append NAME FILE`: the store's append under the service's locks; prints the answer as JSON."""
    from app.datasets.locks import SharedLock, no_shared_lock
    from app.datasets.remote import open_datasets

    database = None
    try:
        content = sys.stdin.buffer.read() if arguments.file == "-" else Path(arguments.file).read_bytes()
        shared_lock: SharedLock = no_shared_lock
        if settings.database_url:
            # Scaled out, the API replicas take this lock too (`JobBackend.shared_lock`).
            from app.jobs.postgres import PostgresJobStore

            database = PostgresJobStore(settings.database_url, pool_size=1)
            shared_lock = database.advisory_lock
        result = open_datasets(settings, shared_lock=shared_lock).append(
            arguments.name, content, replace=arguments.replace, appended_by=arguments.by, calendar=arguments.calendar
        )
    except (StockcastError, OSError) as error:
        print(f"stockcast: {error}", file=sys.stderr)
        return 2
    finally:
        if database is not None:
            database.close()
    answer = result.as_dict()
    if result.changed_dates and settings.ledger:
        # What a running service served in its last flush interval is not written yet: the next append scores it.
        from app.online import ledger_store, score_stored

        store = ledger_store(settings)
        try:
            answer["scored_forecasts"] = score_stored(store, open_datasets(settings), arguments.name)
        finally:
            store.close()
    print(json.dumps(answer, indent=2))
    return 0


def schedule_command(settings: Settings, arguments: argparse.Namespace) -> int:
    """`schedule set|show|delete|list`: what PUT, GET and DELETE /models/{name}/schedule do; prints JSON."""
    from app.datasets.remote import open_datasets
    from app.schedules.service import describe, set_schedule, utc_now
    from app.schedules.spec import ScheduleSpec, ScheduleWhen
    from app.schedules.store import open_schedules

    schedules = open_schedules(settings)
    read_job, close_jobs = _job_reader(settings)
    try:
        if arguments.action == "list":
            answers = [describe(item, schedules.runs(item["model"]), utc_now(), read_job) for item in schedules.all()]
            print(json.dumps(answers, indent=2))
            return 0
        models = model_store(settings)
        if not models.versions(arguments.name):
            print(f"stockcast: unknown model '{arguments.name}'; models: {models.model_names()}", file=sys.stderr)
            return 2
        if arguments.action == "set":
            from training.config import public_fields

            # Only the flags typed: the rest take TrainConfig's defaults when each run starts.
            training = {
                name: getattr(arguments, name) for name in public_fields() if getattr(arguments, name) is not None
            }
            spec = ScheduleSpec(
                dataset=arguments.dataset,
                when=ScheduleWhen(
                    after_close_minutes=arguments.after_close_minutes, every_sessions=arguments.every_sessions
                ),
                min_new_rows=arguments.min_new_rows,
                training=training,
                enabled=not arguments.disabled,
            )
            datasets = open_datasets(settings)
            schedule = set_schedule(schedules, models, datasets, arguments.name, spec, _who(), utc_now())
        else:
            schedule = schedules.require(arguments.name)
        answer = describe(schedule, schedules.runs(arguments.name), utc_now(), read_job)
        if arguments.action == "delete":
            schedules.delete(arguments.name)
        print(json.dumps(answer, indent=2))
    except ValidationError as error:
        print(f"stockcast: {describe_errors(error)}", file=sys.stderr)
        return 2
    except StockcastError as error:
        print(f"stockcast: {error}", file=sys.stderr)
        return 2
    finally:
        schedules.close()
        close_jobs()
    return 0


def export_onnx_command(settings: Settings, arguments: argparse.Namespace) -> int:
    """Export and check model.onnx for stored versions; one JSON line per version; 2 for an unknown model."""
    from training.onnx_backfill import export_stored

    if settings.store_url:
        # A version on object storage is its manifest, written once: there is no file to add to it.
        print(
            "stockcast: export-onnx works on a folder store; versions on object storage (STOCKCAST_STORE_URL)"
            " get model.onnx when they are trained",
            file=sys.stderr,
        )
        return 2
    try:
        results = export_stored(model_store(settings), arguments.name, arguments.version, arguments.force)
    except StockcastError as error:
        print(f"stockcast: {error}", file=sys.stderr)
        return 2
    for result in results:
        print(json.dumps(result), flush=True)
    return 0


def _job_reader(settings: Settings) -> tuple[Any, Any]:
    """Reading job records by id in the settings' mode, and how to let go of the connection."""
    if settings.database_url:
        from app.jobs.postgres import PostgresJobStore

        database = PostgresJobStore(settings.database_url, pool_size=1)
        return database.get, database.close
    from app.jobs.store import JobStore

    return JobStore(settings.jobs_db).get, lambda: None


def _who() -> str:
    """`cli:<user>`: who appended, in the dataset's report and log, where the API writes the key's name."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name (a container without a passwd entry)
        return "cli"


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    """Serve (no arguments), migrate the job database, manage keys, or append rows to a dataset."""
    parser = argparse.ArgumentParser(
        prog="python -m app",
        description="Serve stockcast, migrate its job database, manage its API keys, or append rows to a dataset.",
    )
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("migrate", help="create or upgrade the PostgreSQL job schema (STOCKCAST_DATABASE_URL), exit")
    keys = commands.add_parser("keys", help="API keys (STOCKCAST_API_KEYS_FILE, default <data dir>/api_keys.json)")
    actions = keys.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a key and print it once")
    create.add_argument("name")
    create.add_argument("--scope", choices=SCOPES, required=True)
    actions.add_parser("list", help="names, scopes and creation times (never the keys)")
    revoke = actions.add_parser("revoke", help="remove a key; a running service refuses it within a second")
    revoke.add_argument("name")
    datasets = commands.add_parser("datasets", help="stored datasets (<data dir>/datasets)")
    dataset_actions = datasets.add_subparsers(dest="action", required=True)
    append = dataset_actions.add_parser(
        "append", help="append a CSV's rows to a dataset, as POST /datasets/{name}/rows does; prints the answer"
    )
    append.add_argument("name", help="the dataset")
    append.add_argument("file", help="CSV with a header row, in the upload's columns ('-': standard input)")
    append.add_argument("--replace", action="store_true", help="write rows that change history (they are logged)")
    append.add_argument("--calendar", help="the dataset's trading calendar for missing_sessions (XNYS, 24/7, ...)")
    append.add_argument("--by", default=_who(), help="who appends, for the dataset's log (default: cli:<user>)")
    _schedule_parser(commands)
    export = commands.add_parser(
        "export-onnx",
        help="write and check model.onnx for versions trained without one (no retraining); one JSON line each",
    )
    export.add_argument("name", nargs="?", help="the model (default: every model)")
    export.add_argument("version", nargs="?", type=int, help="the version (default: every version)")
    export.add_argument("--force", action="store_true", help="export again a version that has a checked one")
    return parser.parse_args(argv)


def _schedule_parser(commands: Any) -> None:
    """`schedule set|show|delete|list`: the flags of `set` come from ScheduleSpec and TrainConfig's fields."""
    from app.schedules.spec import ScheduleSpec, ScheduleWhen
    from training.cli import add_config_flags

    schedule = commands.add_parser("schedule", help="retraining schedules (as /models/{name}/schedule)")
    actions = schedule.add_subparsers(dest="action", required=True)
    when, spec = ScheduleWhen.model_fields, ScheduleSpec.model_fields
    setter = actions.add_parser("set", help="set a model's schedule (a new revision, counted from now)")
    setter.add_argument("name", help="the model")
    setter.add_argument("--dataset", required=True, help=spec["dataset"].description)
    for field in ("after_close_minutes", "every_sessions"):
        setter.add_argument(
            f"--{field.replace('_', '-')}", type=int, default=when[field].default, help=when[field].description
        )
    setter.add_argument(
        "--min-new-rows", type=int, default=spec["min_new_rows"].default, help=spec["min_new_rows"].description
    )
    setter.add_argument("--disabled", action="store_true", help="keep the schedule but never run it")
    training = setter.add_argument_group("training settings of each run (TrainConfig; omitted: the defaults)")
    add_config_flags(training)  # type: ignore[arg-type]
    for action in ("show", "delete"):
        actions.add_parser(action, help=f"{action} a model's schedule (printed as JSON)").add_argument("name")
    actions.add_parser("list", help="every schedule (printed as JSON)")


def main(argv: list[str] | None = None) -> int:
    """Bootstrap, check access, then serve until interrupted; or migrate, manage keys or append rows, and exit."""
    arguments = parse_arguments(argv)
    settings = get_settings()
    if arguments.command == "migrate":
        return migrate_command(settings)
    if arguments.command == "keys":
        return keys_command(settings, arguments)
    if arguments.command == "datasets":
        return datasets_command(settings, arguments)
    if arguments.command == "schedule":
        return schedule_command(settings, arguments)
    if arguments.command == "export-onnx":
        return export_onnx_command(settings, arguments)
    import uvicorn

    try:
        lines = check_access(settings)
    except StockcastError as error:
        print(f"stockcast: {error}", file=sys.stderr)
        return 2
    ensure_sample_model(settings)
    for line in lines:
        print(line, flush=True)
    uvicorn.run("app.main:app", **server_options(settings))
    return 0


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's options for serving with `settings`: address, logging, shutdown and connection limits."""
    return {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "log_config": configure_logging(settings.log_format, settings.log_level),
        # The gateway writes the access log, with key name, route template and request id.
        "access_log": False,
        "timeout_graceful_shutdown": round(settings.graceful_shutdown_seconds),
        "http": guarded_protocol(connection_limits(settings)),
        "limit_concurrency": settings.max_connections,
    }


if __name__ == "__main__":
    sys.exit(main())
