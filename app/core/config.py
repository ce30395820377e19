"""The one place for settings: environment variables named STOCKCAST_*.

See docs/design.md, "Service".
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from training import gate
from training.config import TrainConfig
from training.store import DEFAULT_ROOT


class Settings(BaseSettings):
    """Service settings; every field can be set as STOCKCAST_<FIELD> in the environment."""

    model_config = SettingsConfigDict(env_prefix="STOCKCAST_", env_file=".env", extra="ignore")

    models_dir: Path = Field(DEFAULT_ROOT, description="Model store: <name>/<version>/ folders.")
    data_dir: Path = Field(Path("var"), description="Uploaded datasets and the job database (SQLite).")
    store_url: str | None = Field(
        None,
        pattern=r"^s3://[^/]+(/.*)?$",
        description="Keep model versions, aliases and their logs in S3-compatible object storage"
        " (s3://bucket/prefix; endpoint, region and credentials from the standard AWS variables, AWS_ENDPOINT_URL"
        " included). Unset: the folder `models_dir` is the store. Set: `models_dir` is this machine's cache of"
        " whole versions, so API replicas and queue workers share no folder (docs/store.md).",
    )
    store_cache_versions: int = Field(
        20, ge=1, description="With `store_url`: versions kept in the local cache; the least recently used go first."
    )
    sample_data: Path = Field(
        Path("data/sample/msft.csv"), description="Bundled CSV registered as a dataset and used for the first model."
    )
    host: str = Field("127.0.0.1", description="Interface uvicorn binds to (0.0.0.0 in a container).")
    port: int = Field(8000, ge=1, le=65535, description="TCP port of the API.")
    log_level: str = Field("info", description="uvicorn log level.")

    bootstrap: bool = Field(True, description="On start, train a model on the sample data if the store is empty.")
    bootstrap_model: str = Field("msft", description="Name of the model trained on the sample data.")
    bootstrap_epochs: int = Field(
        TrainConfig.model_fields["epochs"].default,
        ge=1,
        description="Epochs for the sample model (early stopping applies); TrainConfig's bounds hold.",
    )
    bootstrap_backtest_folds: int = Field(
        TrainConfig.model_fields["backtest_folds"].default,
        ge=0,
        description="Walk-forward folds for the sample model; TrainConfig's bounds hold.",
    )

    job_concurrency: int = Field(1, ge=1, le=16, description="Training jobs that may run at once; the rest queue.")
    training_threads: int = Field(1, ge=1, description="TensorFlow threads per training process.")
    training_niceness: int = Field(10, ge=0, le=19, description="OS priority decrement for training processes.")
    job_poll_seconds: float = Field(0.5, gt=0, description="How often the job runner checks its training processes.")

    database_url: str | None = Field(
        None,
        description="PostgreSQL URL (postgresql://user:password@host:5432/db). Unset: embedded mode, job records in"
        " SQLite and jobs run by the API's own runner. Set: job records and the queue in PostgreSQL (procrastinate);"
        " the API only enqueues, reads and cancels, and queue workers (`python -m app.worker`) run the jobs.",
    )
    database_pool_size: int = Field(
        4,
        ge=1,
        le=64,
        description="Most PostgreSQL connections one API process or queue worker holds (plus one listener).",
    )
    worker_concurrency: int = Field(1, ge=1, le=16, description="Training jobs one queue worker runs at once.")
    job_max_attempts: int = Field(
        2, ge=1, le=10, description="Runs a job may get when its queue worker dies mid-job (1: never retried; failed)."
    )
    job_outage_seconds: float = Field(
        600.0, gt=0, description="How long a training run cut off from the job database waits to record its result."
    )
    worker_heartbeat_seconds: float = Field(10.0, gt=0, description="How often a queue worker reports to the database.")
    worker_stalled_seconds: float = Field(
        30.0,
        gt=0,
        description="A queue worker silent this long is presumed dead; its job is retried or failed by the sweeper."
        " Keep it at least three heartbeats.",
    )
    sweep_seconds: float = Field(5.0, gt=0, description="How often each queue worker looks for jobs of dead ones.")
    abort_poll_seconds: float = Field(
        1.0,
        gt=0,
        description="How often a queue worker checks for cancellations when a LISTEN/NOTIFY wake-up was missed.",
    )

    schedule_tick_seconds: float = Field(
        30.0,
        gt=0,
        description="How often retraining schedules are checked for a due slot (embedded: by the API; scaled out:"
        " by the queue worker that holds the tickers' advisory lock).",
    )

    max_batch_size: int = Field(64, ge=1, description="Most windows one micro-batched inference call takes.")
    max_batch_wait_us: int = Field(1000, ge=0, description="Longest a request waits for others to batch with.")
    inference_timeout_seconds: float = Field(
        60.0, gt=0, description="A call the inference process leaves unanswered this long gets it restarted."
    )
    inference_xla: bool = Field(True, description="XLA-compile each served network in the background.")
    inference_engine: Literal["auto", "onnx", "tensorflow"] = Field(
        "auto",
        description="What runs the networks: auto: ONNX Runtime for a version with a checked model.onnx, TensorFlow"
        " for the others; onnx: ONNX Runtime only (a version without a checked export is not served); tensorflow:"
        " TensorFlow only.",
    )
    inference_load_timeout_seconds: float = Field(
        600.0,
        gt=0,
        description="A version load (TensorFlow's import in a new inference process, tracing, warm-up) left"
        " unanswered this long gets the inference process restarted; never less than inference_timeout_seconds.",
    )
    # Doubled after each quick death (a process that lived under a minute), up to a minute.
    inference_restart_delay_seconds: float = Field(
        1.0,
        gt=0,
        description="Wait before restarting an inference process that stopped (doubling when it keeps dying).",
    )
    inference_stop_timeout_seconds: float = Field(
        10.0, gt=0, description="At shutdown, how long the inference process may take to exit before it is killed."
    )
    ready_timeout_seconds: float = Field(
        5.0,
        gt=0,
        description="/ready asks the inference process to answer a ping; unanswered this long, the service is"
        " not ready (the process is alive but stuck or swamped).",
    )
    graceful_shutdown_seconds: float = Field(
        10.0, gt=0, description="At shutdown, how long uvicorn lets open requests finish before closing them."
    )
    max_batch_windows: int = Field(1024, ge=1, description="Most windows in one /predict/batch request.")
    max_upload_bytes: int = Field(50 * 1024 * 1024, ge=1024, description="Largest CSV accepted by /datasets.")
    refresh_seconds: float = Field(5.0, gt=0, description="How often the store is re-read for new versions/aliases.")
    preload: bool = Field(
        True,
        description="Load every model's default version at start-up (and each new default as it appears); false:"
        " load a model's default version on its first request (the service is ready at once, that request waits"
        " for the load).",
    )
    pinned_cache_size: int = Field(4, ge=0, description="Non-default versions kept loaded for pinned requests.")
    pinned_loads_per_minute: int = Field(
        12, ge=1, description="Most loads of pinned versions a minute; a request needing one more gets 429."
    )

    api_keys_file: Path | None = Field(
        None,
        description="API keys (names, scopes, SHA-256 hashes; `python -m app keys ...`). Default:"
        " <data_dir>/api_keys.json. Changes are picked up by a running service within a second.",
    )
    allow_anonymous: bool = Field(
        False,
        description="With no API keys, serve everyone even when bound to an address other than loopback."
        " Without it, such a start is refused (or keys are created, see create_keys_on_first_start).",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Without API keys, the service answers only requests whose Host is localhost or a loopback"
        " address (so a web page cannot reach it through DNS rebinding); names listed here are answered too.",
    )
    create_keys_on_first_start: bool = Field(
        False,
        description="With no API keys and a non-loopback address, create an 'admin' and a 'predict' key on start"
        " and print them once (as Jupyter prints its token); docker compose sets this.",
    )
    mutations_per_minute: int = Field(
        60, ge=1, description="Per-key rate limit on mutating routes (datasets, training, cancelling, aliases)."
    )
    max_queued_jobs: int = Field(20, ge=1, description="Most training jobs waiting to start; more answer 429.")
    max_request_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Largest request body on any route but /datasets (413 beyond)."
    )
    max_header_bytes: int = Field(
        16 * 1024, ge=1024, description="Largest request line and headers together (431 beyond), before any key check."
    )
    header_timeout_seconds: float = Field(
        10.0, gt=0, description="A request's headers must arrive within this long of its start (408 otherwise)."
    )
    body_timeout_seconds: float = Field(
        120.0, gt=0, description="A request body still arriving this long after its headers closes the connection."
    )
    max_connections: int = Field(
        1024, ge=1, description="Open connections (and requests in progress) beyond which new requests answer 503."
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Web origins allowed to call the API from a browser (CORS); empty (the default) turns CORS off."
        " Mutating requests from any other Origin are refused.",
    )
    metrics: bool = Field(True, description="Count requests, batches and jobs and serve them at /metrics.")
    metrics_scope: Literal["open", "predict", "admin"] = Field(
        "predict", description="Scope a key needs to read /metrics on the API port ('open': no key)."
    )
    metrics_port: int | None = Field(
        None, ge=1, le=65535, description="Serve /metrics on this separate port (no key) instead of the API port."
    )
    log_format: Literal["text", "json"] = Field("text", description="Log lines as plain text or one JSON object each.")
    access_log: bool = Field(True, description="Log every request: key name, route, status, duration, request id.")

    gate_significance_level: float = Field(
        gate.DEFAULT_SIGNIFICANCE_LEVEL,
        gt=0,
        lt=0.5,
        description="Promotion gate: one-sided level of the Diebold-Mariano tests against naive (step 1 and pooled)"
        " and of the binomial check of the 0.9 interval's coverage; see training/gate.py.",
    )
    gate_compare_with_champion: bool = Field(
        gate.DEFAULT_COMPARE_WITH_CHAMPION,
        description="Promotion gate: replace a champion trained on the same dataset and horizon only when a paired"
        " one-sided Diebold-Mariano test on the candidate's folds (the champion re-scored on them) says the"
        " candidate is better, at the gate's level; a tie keeps the champion. Off: no comparison.",
    )
    gate_spend_over_attempts: bool = Field(
        gate.DEFAULT_SPEND_OVER_ATTEMPTS,
        description="Promotion gate: judge the k-th attempt on an evaluation period that overlaps earlier attempts'"
        " at level/(k(k+1)), so retraining again and again cannot buy a promotion (at most `level` in all);"
        " off: every attempt at the full level.",
    )
    unpromoted_default: Literal["network", "naive", "refuse"] = Field(
        "network",
        description="What an unpinned /predict gets for a model with no promoted version (no champion): 'network'"
        " serves the lowest-ratio version with skill.beats_naive false; 'naive' answers the last value with the"
        " naive forecast's conformal bands; 'refuse' answers 409. Pinned requests always get what they pin.",
    )

    in_sample_forecasts: Literal["flag", "refuse"] = Field(
        "flag",
        description="A dated window ending before the served version's trained_through asks for targets the network"
        " was trained on: 'flag' answers with skill.in_sample true (the evidence does not apply); 'refuse'"
        " answers 422.",
    )
    ledger: bool = Field(
        True,
        description="Keep every served forecast (the forecast ledger) and score it when its actual close is appended;"
        " /models/{name}/monitoring reports the scores.",
    )
    ledger_queue_size: int = Field(
        100_000, ge=1, description="Forecasts waiting to be written to the ledger; beyond it they are dropped, counted."
    )
    ledger_flush_seconds: float = Field(
        1.0, gt=0, description="How often waiting forecasts are written; a crash loses at most this interval's."
    )
    ledger_retention_days: int = Field(
        730, ge=1, description="Kept forecasts older than this are deleted; their scores (the summary) stay."
    )
    monitoring_coverage_alpha: float = Field(
        0.01,
        gt=0,
        lt=0.5,
        description="Monitoring: a band's coverage is breached when Kupiec's test rejects it at this level (over"
        " the last 250 scored sessions, or all of them when fewer).",
    )
    monitoring_skill_alpha: float = Field(
        0.05,
        gt=0,
        lt=0.5,
        description="Monitoring: skill is lost when the anytime-valid test finds the network worse than naive at this"
        " level (e-value at least 1/alpha).",
    )
    monitoring_min_scores: int = Field(
        20, ge=1, description="Monitoring: fewer scored sessions than this give status insufficient_data."
    )
    demote_after_sessions: int = Field(
        5,
        ge=0,
        le=250,
        description="Monitoring: a champion whose status has been coverage_breach or skill_lost at each of this many"
        " consecutive scored sessions (since it became champion) loses the alias (alias log by 'monitor');"
        " unpinned requests then get what unpromoted_default says. 0: never demote.",
    )
    promote_on_live_evidence: bool = Field(
        False,
        description="Promote the shadow challenger (alias 'challenger') to champion when its backtest evidence"
        " holds and the paired live test over at least live_min_sessions scored sessions says it beats the"
        " champion and naive, at the gate's level spent over looks; only while the model's exchange is closed."
        " Off: the challenger is only shown in /monitoring.",
    )
    live_min_sessions: int = Field(
        20,
        ge=2,
        le=1000,
        description="Live promotion: scored sessions (step-1 targets both have) the paired live test needs first.",
    )
    adaptive_bands: bool = Field(
        True,
        description="Adapt each band's working level to the live scores of the served version (adaptive conformal"
        " inference); off: bands stay as calibrated at training.",
    )
    adaptive_min_scores: int = Field(
        20, ge=1, description="Live scored steps a version needs before its bands adapt (basis 'adaptive')."
    )
    adaptive_gamma: float = Field(
        0.005, gt=0, lt=1, description="Step size of adaptive conformal inference (Gibbs & Candes 2021)."
    )

    @property
    def datasets_dir(self) -> Path:
        """Folder of uploaded CSVs and their reports."""
        return self.data_dir / "datasets"

    @property
    def reports_dir(self) -> Path:
        """Version reports the API had to draw itself (versions trained before reports were drawn at training)."""
        return self.data_dir / "reports"

    @property
    def temp_dir(self) -> Path:
        """Temporary files of the inference process and training processes (TensorFlow's autograph modules)."""
        return self.data_dir / "tmp"

    @property
    def keys_file(self) -> Path:
        """The API keys file in use."""
        return self.api_keys_file or self.data_dir / "api_keys.json"

    @property
    def ledger_db(self) -> Path:
        """SQLite file holding the forecast ledger (embedded mode)."""
        return self.data_dir / "ledger.sqlite3"

    @property
    def jobs_db(self) -> Path:
        """SQLite file holding job records."""
        return self.data_dir / "jobs.sqlite3"


def default(field: str) -> Any:
    """A setting's default, for code that runs without the Settings object (child processes, library defaults).

    Keyword defaults elsewhere read it from here, so each default is written once.
    """
    return Settings.model_fields[field].default


@lru_cache
def get_settings() -> Settings:
    """Settings read once per process from the environment."""
    return Settings()
