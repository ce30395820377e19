"""Prometheus metrics: what the API process counts, and what it reads from its state when scraped.

Names follow the Prometheus conventions: a `stockcast_` prefix, base units
(`_seconds`, `_bytes`), `_total` on counters. Every label takes values from
a bounded set: route templates (`/models/{name}`, never the raw path),
methods, status codes, job states, gate decisions, and model names read from
the store (checked names of models that exist, never a name a client sent).

Two kinds of metric:
- counted as things happen (requests, batches, job durations, uploads); the
  children of labelled metrics are looked up once and cached, so a request
  pays two dictionary look-ups, one counter increment and one histogram
  observation;
- read from the app's state at scrape time (`StateCollector`: loaded
  versions, jobs by status, inference-process restarts), costing nothing
  between scrapes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from app.core.config import Settings

logger = logging.getLogger("stockcast.metrics")

# Request latencies: the fast path answers in about a millisecond, training
# and report routes take seconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
JOB_BUCKETS = (10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)

HTTP_REQUESTS = Counter(
    "stockcast_http_requests_total",
    "HTTP requests answered, by method, route template and status.",
    ("method", "route", "status"),
)
HTTP_DURATION = Histogram(
    "stockcast_http_request_duration_seconds",
    "Time from a request's arrival to the end of its answer.",
    ("method", "route"),
    buckets=LATENCY_BUCKETS,
)
HTTP_IN_FLIGHT = Gauge("stockcast_http_requests_in_flight", "HTTP requests being answered now.")
AUTH_REJECTIONS = Counter(
    "stockcast_http_rejections_total",
    "Requests refused before they reached a route, by reason (unauthenticated, forbidden, rate_limited, too_large,"
    " cross_origin).",
    ("reason",),
)
BATCH_SIZE = Histogram(
    "stockcast_predict_batch_windows", "Windows per micro-batched inference call.", buckets=BATCH_BUCKETS
)
QUEUE_WAIT = Histogram(
    "stockcast_predict_queue_wait_seconds",
    "Time the oldest request of a batch waited before its inference call started.",
    buckets=LATENCY_BUCKETS,
)
INFERENCE_DURATION = Histogram(
    "stockcast_inference_call_duration_seconds",
    "Time from sending a batch to the inference process to having its outputs.",
    buckets=LATENCY_BUCKETS,
)
JOB_DURATION = Histogram(
    "stockcast_job_duration_seconds", "Training jobs' run time, by final state.", ("status",), buckets=JOB_BUCKETS
)
GATE_DECISIONS = Counter("stockcast_gate_decisions_total", "Promotion gate decisions on new versions.", ("decision",))
DATASET_UPLOADS = Counter(
    "stockcast_dataset_uploads_total", "Dataset uploads, by outcome (stored or rejected).", ("outcome",)
)

# Off only to measure what counting costs (`bench/serve.py`); `create_app` sets it from `Settings.metrics`.
ENABLED = True

_request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    """Count one answered request and its latency."""
    key = (method, route, status)
    children = _request_children.get(key)
    if children is None:
        children = (HTTP_REQUESTS.labels(method, route, str(status)), HTTP_DURATION.labels(method, route))
        _request_children[key] = children
    children[0].inc()
    children[1].observe(seconds)


def observe_batch(windows: int, queue_wait_seconds: float, inference_seconds: float) -> None:
    """Record one inference call: its size, how long its oldest request waited, and how long the call took."""
    BATCH_SIZE.observe(windows)
    QUEUE_WAIT.observe(queue_wait_seconds)
    INFERENCE_DURATION.observe(inference_seconds)


def observe_job(status: str, seconds: float | None, gate: dict[str, Any] | None) -> None:
    """Record a finished training job: its duration and, if it produced a version, the gate's decision."""
    if seconds is not None:
        JOB_DURATION.labels(status).observe(seconds)
    if gate is not None:
        GATE_DECISIONS.labels("promoted" if gate.get("promoted") else "not_promoted").inc()


class StateCollector(Collector):
    """Reads the running service's state when Prometheus scrapes; set `source` to what it reads.

    `source` returns a dict: `versions` {model: [loaded version, ...]},
    `served` {model: default version}, `jobs` {status: count}, `restarts`
    (inference-process restarts). One collector per process: the latest app
    to start sets the source (tests build several apps in one process).
    """

    def __init__(self) -> None:
        self.source: Callable[[], dict[str, Any]] | None = None

    def collect(self) -> Iterable[Metric]:
        """The metric families, or none while no app is running."""
        if self.source is None:
            return []
        try:
            state = self.source()
        except Exception:  # a scrape must not fail because one source did
            logger.exception("metrics: reading the service state failed")
            return []
        loaded = GaugeMetricFamily(
            "stockcast_model_loaded_versions", "Versions of a model loaded in the inference process.", labels=["model"]
        )
        served = GaugeMetricFamily(
            "stockcast_model_served_version", "The version a model serves by default.", labels=["model"]
        )
        for model, versions in sorted(state.get("versions", {}).items()):
            loaded.add_metric([model], len(versions))
        for model, version in sorted(state.get("served", {}).items()):
            served.add_metric([model], version)
        jobs = GaugeMetricFamily("stockcast_jobs", "Training jobs by status.", labels=["status"])
        for status, count in sorted(state.get("jobs", {}).items()):
            jobs.add_metric([status], count)
        restarts = CounterMetricFamily(
            "stockcast_inference_process_restarts", "Times the inference process was restarted after it died."
        )
        restarts.add_metric([], state.get("restarts", 0))
        return [loaded, served, jobs, restarts]


STATE = StateCollector()
REGISTRY.register(STATE)


def exposition() -> tuple[bytes, str]:
    """The text exposition of every metric, and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def serve_separately(settings: Settings) -> Any | None:
    """Serve the metrics on `settings.metrics_port` (no key) from a thread; the server, to shut down, or None."""
    if settings.metrics_port is None:
        return None
    server, _ = start_http_server(settings.metrics_port, addr=settings.host)
    logger.info("metrics on http://%s:%d/metrics", settings.host, settings.metrics_port)
    return server
