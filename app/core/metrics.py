"""Prometheus metrics: what the API process counts, and what it reads from its state when scraped.

Names follow the Prometheus conventions (`stockcast_` prefix, base units,
`_total` on counters); every label takes values from a bounded set (route
templates, never raw paths; model names read from the store, never sent).
Three kinds: counted on the event loop for every request and batch (`LOOP`,
plain numbers only that thread writes, since prometheus_client's per-increment
lock would cost more than the rest of the hot path); counted with
prometheus_client where nothing is hot (jobs, gate decisions, uploads,
refusals); read from the app's state at scrape time (`StateCollector`).
See docs/design.md, "Service".
"""

from __future__ import annotations

import bisect
import itertools
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from app.core.config import Settings

logger = logging.getLogger("stockcast.metrics")

# Request latencies: predictions answer in milliseconds, training and report
# routes take seconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
JOB_BUCKETS = (10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)

AUTH_REJECTIONS = Counter(
    "stockcast_http_rejections_total",
    "Requests refused before they reached a route, by reason (unauthenticated, forbidden, rate_limited, too_large,"
    " cross_origin).",
    ("reason",),
)
JOB_DURATION = Histogram(
    "stockcast_job_duration_seconds", "Training jobs' run time, by final state.", ("status",), buckets=JOB_BUCKETS
)
GATE_DECISIONS = Counter("stockcast_gate_decisions_total", "Promotion gate decisions on new versions.", ("decision",))
DATASET_UPLOADS = Counter(
    "stockcast_dataset_uploads_total", "Dataset uploads, by outcome (stored or rejected).", ("outcome",)
)
DATASET_APPENDS = Counter(
    "stockcast_dataset_appends_total",
    "Appends of rows to datasets, by outcome (changed, unchanged: a retry, or rejected).",
    ("outcome",),
)

# Off only to measure what counting costs; `create_app` sets it from `Settings.metrics`.
ENABLED = True


class LoopHistogram:
    """A histogram family (optionally labelled) that only the event-loop thread observes; read when scraped.

    Each label set keeps one count per bucket (not cumulative), one for
    values above the last bound, and the sum, in a plain list: an
    observation is one `bisect` and two additions, without a lock. A
    scrape from another thread copies each list first (a C-level copy under
    the GIL), so it never sees a half-made series; at worst the sum and the
    counts differ by the observation being made at that instant.
    """

    def __init__(self, name: str, documentation: str, buckets: Sequence[float], labels: Sequence[str] = ()) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = list(labels)
        self.bounds = tuple(float(bound) for bound in buckets)
        self._series: dict[tuple[str, ...], list[float]] = {}

    def observe(self, amount: float, labels: tuple[str, ...] = ()) -> None:
        """Count one value (event-loop thread only)."""
        series = self._series.get(labels)
        if series is None:
            series = self._series[labels] = [0] * (len(self.bounds) + 2)
        series[bisect.bisect_left(self.bounds, amount)] += 1
        series[-1] += amount

    def family(self, series_by_labels: dict[tuple[str, ...], list[float]] | None = None) -> HistogramMetricFamily:
        """The histogram as Prometheus reads it: cumulative buckets, `+Inf`, count and sum per label set.

        Of the series observed here, or of `series_by_labels` (same layout) when given.
        """
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        chosen = self._series if series_by_labels is None else series_by_labels
        for labels, series in list(chosen.items()):
            counts = list(series)
            cumulative = list(itertools.accumulate(counts[:-1]))
            buckets = [(floatToGoString(bound), total) for bound, total in zip(self.bounds, cumulative, strict=False)]
            family.add_metric(list(labels), [*buckets, ("+Inf", cumulative[-1])], counts[-1])
        return family


class LoopMetrics(Collector):
    """What the event loop counts for every request and batch (see the module docstring), exposed when scraped."""

    def __init__(self) -> None:
        self.in_flight = 0
        # One latency series per (method, route, status), in LoopHistogram's layout: the request counter
        # (by status) and the latency histogram (by method and route) are both summed from it when
        # scraped, so a request costs one dictionary lookup, not one per metric.
        self._requests: dict[tuple[str, str, int], list[float]] = {}
        self.request_seconds = LoopHistogram(
            "stockcast_http_request_duration_seconds",
            "Time from a request's arrival to the end of its answer.",
            LATENCY_BUCKETS,
            ("method", "route"),
        )
        self.batch_windows = LoopHistogram(
            "stockcast_predict_batch_windows", "Windows per micro-batched inference call.", BATCH_BUCKETS
        )
        self.queue_wait = LoopHistogram(
            "stockcast_predict_queue_wait_seconds",
            "Time the oldest request of a batch waited before its inference call started.",
            LATENCY_BUCKETS,
        )
        self.inference_seconds = LoopHistogram(
            "stockcast_inference_call_duration_seconds",
            "Time from sending a batch to the inference process to having its outputs.",
            LATENCY_BUCKETS,
        )

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request and its latency (event-loop thread only)."""
        series = self._requests.get((method, route, status))
        if series is None:
            series = self._requests[(method, route, status)] = [0] * (len(self.request_seconds.bounds) + 2)
        series[bisect.bisect_left(self.request_seconds.bounds, seconds)] += 1
        series[-1] += seconds

    def observe_batch(self, windows: int, queue_wait_seconds: float, inference_seconds: float) -> None:
        """Record one inference call: its size, how long its oldest request waited, how long the call took."""
        self.batch_windows.observe(windows)
        self.queue_wait.observe(queue_wait_seconds)
        self.inference_seconds.observe(inference_seconds)

    def collect(self) -> Iterable[Metric]:
        """The request and batch metric families."""
        requests = CounterMetricFamily(
            "stockcast_http_requests_total",
            "HTTP requests answered, by method, route template and status.",
            labels=["method", "route", "status"],
        )
        by_route: dict[tuple[str, ...], list[float]] = {}
        for (method, route, status), series in list(self._requests.items()):
            counts = list(series)  # a C-level copy: never half of an observation
            requests.add_metric([method, route, str(status)], sum(counts[:-1]))
            summed = by_route.get((method, route))
            by_route[(method, route)] = (
                counts if summed is None else [a + b for a, b in zip(summed, counts, strict=True)]
            )
        in_flight = GaugeMetricFamily("stockcast_http_requests_in_flight", "HTTP requests being answered now.")
        in_flight.add_metric([], self.in_flight)
        histograms = (self.batch_windows, self.queue_wait, self.inference_seconds)
        return [
            requests,
            in_flight,
            self.request_seconds.family(by_route),
            *(histogram.family() for histogram in histograms),
        ]


LOOP = LoopMetrics()
REGISTRY.register(LOOP)


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
    (inference-process restarts); with the ledger on, `ledger` {dropped,
    written}, `online` {model: `app.ledger.monitor.summary_of`} and
    `demotions` {model: champions the monitor took away}. One
    collector per process: the latest app to start sets the source (tests
    build several apps in one process).
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
        engines = GaugeMetricFamily(
            "stockcast_model_served_engine",
            "1 for what runs a model's default version: onnx, xla or tensorflow.",
            labels=["model", "engine"],
        )
        for model, engine in sorted(state.get("engines", {}).items()):
            if engine is not None:
                engines.add_metric([model, engine], 1)
        jobs = GaugeMetricFamily("stockcast_jobs", "Training jobs by status.", labels=["status"])
        for status, count in sorted(state.get("jobs", {}).items()):
            jobs.add_metric([status], count)
        restarts = CounterMetricFamily(
            "stockcast_inference_process_restarts", "Times the inference process was restarted after it died."
        )
        restarts.add_metric([], state.get("restarts", 0))
        return [
            loaded,
            served,
            engines,
            jobs,
            restarts,
            *ledger_families(state.get("ledger")),
            *online_families(state.get("online")),
            *demotion_families(state.get("demotions")),
        ]


def ledger_families(ledger: dict[str, int] | None) -> list[Metric]:
    """The forecast ledger's writer: forecasts written and dropped (none while the ledger is off)."""
    if ledger is None:
        return []
    written = CounterMetricFamily("stockcast_ledger_written", "Served forecasts written to the forecast ledger.")
    written.add_metric([], ledger["written"])
    dropped = CounterMetricFamily(
        "stockcast_ledger_dropped",
        "Served forecasts the ledger dropped (its queue was full or the write failed): answered, never scored.",
    )
    dropped.add_metric([], ledger["dropped"])
    return [written, dropped]


def online_families(online: dict[str, dict[str, Any]] | None) -> list[Metric]:
    """How the served version's forecasts did once their closes arrived (GET /models/{name}/monitoring)."""
    if online is None:
        return []
    scored = CounterMetricFamily(
        "stockcast_online_scored",
        "Live forecasts of the served version scored at step 1 (split suspects left out).",
        labels=["model"],
    )
    coverage = GaugeMetricFamily(
        "stockcast_online_coverage",
        "Share of the served version's step-1 actuals inside each band over the last 250 scored sessions.",
        labels=["model", "level"],
    )
    ratio = GaugeMetricFamily(
        "stockcast_online_ratio_to_naive",
        "Mean |log error| of the served version's step-1 forecasts over naive's, last 250 scored sessions.",
        labels=["model"],
    )
    status = GaugeMetricFamily(
        "stockcast_online_status",
        "Monitoring status of the served version: 0 ok, 1 insufficient_data, 2 coverage_breach, 3 skill_lost.",
        labels=["model"],
    )
    for model, summary in sorted(online.items()):
        scored.add_metric([model], summary["scored"])
        for level, value in summary["coverage"].items():
            if value is not None:
                coverage.add_metric([model, level], value)
        if summary["ratio_to_naive"] is not None:
            ratio.add_metric([model], summary["ratio_to_naive"])
        status.add_metric([model], summary["status_code"])
    return [scored, coverage, ratio, status]


def demotion_families(demotions: dict[str, int] | None) -> list[Metric]:
    """Champions the monitor took away, per model, counted from the alias log (any process may have done it)."""
    if demotions is None:
        return []
    family = CounterMetricFamily(
        "stockcast_demotions",
        "Times the monitor demoted a model's champion (coverage_breach or skill_lost for"
        " STOCKCAST_DEMOTE_AFTER_SESSIONS sessions), from the alias log.",
        labels=["model"],
    )
    for model, count in sorted(demotions.items()):
        family.add_metric([model], count)
    return [family]


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
