"""`python -m app`: make sure a model is there to serve, then start uvicorn.

`python -m app migrate` instead creates or upgrades the PostgreSQL schema of
scaled-out mode (STOCKCAST_DATABASE_URL) and exits; run it before the APIs
and workers start, as often as you like.

On a fresh clone the store is empty, so the first start trains the sample
model (showing a progress bar per epoch) before the API comes up. Later
starts find the model and go straight to serving.
"""

from __future__ import annotations

import subprocess
import sys

from app.core.config import Settings, get_settings
from training.store import ModelStore


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
    if not settings.bootstrap or ModelStore(settings.models_dir).versions(settings.bootstrap_model):
        return
    if not settings.sample_data.is_file():
        print(f"stockcast: no sample data at {settings.sample_data}; starting with an empty store", file=sys.stderr)
        return
    print(f"stockcast: the store is empty; training '{settings.bootstrap_model}' on {settings.sample_data} first")
    # A separate process, so the API process starts without training state.
    subprocess.run(bootstrap_command(settings), check=True)


def migrate_command(settings: Settings) -> int:
    """Apply the missing migrations of the job database; 2 when there is no database to migrate."""
    if not settings.database_url:
        print("stockcast: STOCKCAST_DATABASE_URL is not set; embedded mode needs no migration", file=sys.stderr)
        return 2
    from app.jobs.schema import migrate

    applied = migrate(settings.database_url)
    print(f"stockcast: applied {applied}" if applied else "stockcast: the job database is up to date")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Bootstrap, then serve until interrupted (or `migrate`, then exit)."""
    import uvicorn

    arguments = sys.argv[1:] if argv is None else argv
    settings = get_settings()
    if arguments == ["migrate"]:
        return migrate_command(settings)
    if arguments:
        print(f"usage: python -m app [migrate]; got {arguments}", file=sys.stderr)
        return 2
    ensure_sample_model(settings)
    uvicorn.run(
        "app.main:app",
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=round(settings.graceful_shutdown_seconds),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
