"""Prometheus metrics for operators: job latency and outcomes, spend, provider errors, breakers, queue."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from engine.errors import FailureKind
from storage.states import JobState
from storage.stats import JobCounts
from storage.workers import served

log = logging.getLogger(__name__)

# Likeness scores are in [0, 1]; 0.5 is the recognizer's own same-person threshold.
LIKENESS_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
SAFETY_POLICIES = frozenset({"block", "spoiler", "allow"})

# Renders take seconds to minutes; the buckets span a fast provider to a job at its deadline.
LATENCY_BUCKETS = (1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0)

# A queue estimate's error, early (negative) or late, from seconds to the length of a long render.
ETA_ERROR_BUCKETS = (-300.0, -120.0, -60.0, -30.0, -15.0, -5.0, 0.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0)

BREAKER_VALUES = {"closed": 0, "half_open": 1, "half-open": 1, "open": 2}

# Label values outside these sets are counted as "other", so a caller's mistake cannot blow up the
# number of series.
_STATES = frozenset(str(state) for state in JobState)
_KINDS = frozenset(str(kind) for kind in FailureKind)
_OTHER = "other"


class JobMetrics(Protocol):
    """Where the dispatcher reports outcomes for the operator's metrics."""

    def job_finished(self, backend: str, state: str, seconds: float) -> None: ...
    def spend(self, backend: str, usd: float) -> None: ...
    def provider_error(self, backend: str, kind: str) -> None: ...
    def breaker_state(self, backend: str, state: str) -> None: ...


class LikenessMetrics(Protocol):
    """Where the judging step reports each scored output, its free re-renders and flagged outputs."""

    def likeness(self, backend: str, score: float) -> None: ...
    def likeness_retry(self, backend: str) -> None: ...
    def unsafe_output(self, backend: str, policy: str) -> None: ...


class NullMetrics:
    """Metrics nobody reads: a worker without a metrics endpoint, tests, ``likeness generate``."""

    def likeness(self, backend: str, score: float) -> None:
        pass

    def likeness_retry(self, backend: str) -> None:
        pass

    def unsafe_output(self, backend: str, policy: str) -> None:
        pass

    def job_finished(self, backend: str, state: str, seconds: float) -> None:
        pass

    def spend(self, backend: str, usd: float) -> None:
        pass

    def provider_error(self, backend: str, kind: str) -> None:
        pass

    def breaker_state(self, backend: str, state: str) -> None:
        pass


NULL_METRICS = NullMetrics()


class Metrics:
    """The metric objects of one process, on their own registry (so tests can build several).

    The dispatcher reports through the methods below; the health server fills the job gauges from the
    database with ``observe_jobs`` right before each scrape.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._job_seconds = Histogram(
            "likeness_job_duration_seconds",
            "Time from a job's start to its final state, per backend.",
            ["backend"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._jobs_finished = Counter(
            "likeness_jobs_finished",
            "Jobs that reached a final state, per backend and state.",
            ["backend", "state"],
            registry=self.registry,
        )
        self._spend = Counter(
            "likeness_spend_usd",
            "Provider money spent on jobs (USD), per backend.",
            ["backend"],
            registry=self.registry,
        )
        self._provider_errors = Counter(
            "likeness_provider_errors",
            "Classified backend failures, per backend and failure kind.",
            ["backend", "kind"],
            registry=self.registry,
        )
        self._breaker = Gauge(
            "likeness_breaker_state",
            "Circuit breaker per backend: 0 closed, 1 half-open, 2 open.",
            ["backend"],
            registry=self.registry,
        )
        self._likeness = Histogram(
            "likeness_output_likeness",
            "Face judge score of each rendered output against its identity (0 without a face), per backend.",
            ["backend"],
            buckets=LIKENESS_BUCKETS,
            registry=self.registry,
        )
        self._likeness_retries = Counter(
            "likeness_likeness_retries",
            "Free re-renders of results that scored below the likeness threshold, per backend.",
            ["backend"],
            registry=self.registry,
        )
        self._unsafe = Counter(
            "likeness_unsafe_outputs",
            "Outputs flagged by a provider or the safety classifier, per backend and the policy applied.",
            ["backend", "policy"],
            registry=self.registry,
        )
        self._eta_error = Histogram(
            "likeness_queue_eta_error_seconds",
            "When a queued job's result came, less when its user was first told it would (negative: early).",
            buckets=ETA_ERROR_BUCKETS,
            registry=self.registry,
        )
        self._store = _StoreCollector()
        self.registry.register(self._store)

    def job_finished(self, backend: str | None, state: str, seconds: float) -> None:
        label = backend or "none"
        self._job_seconds.labels(backend=label).observe(max(0.0, seconds))
        self._jobs_finished.labels(backend=label, state=_known(str(state), _STATES)).inc()

    def spend(self, backend: str, usd: float) -> None:
        series = self._spend.labels(backend=backend)  # a free backend still shows up, at zero
        if usd > 0:  # a counter only goes up
            series.inc(usd)

    def provider_error(self, backend: str, kind: str) -> None:
        self._provider_errors.labels(backend=backend, kind=_known(str(kind), _KINDS)).inc()

    def breaker_state(self, backend: str, state: str) -> None:
        value = BREAKER_VALUES.get(str(state))
        if value is None:
            log.warning("unknown breaker state backend=%s state=%s", backend, state)
            return
        self._breaker.labels(backend=backend).set(value)

    def likeness(self, backend: str, score: float) -> None:
        self._likeness.labels(backend=backend).observe(min(1.0, max(0.0, score)))

    def likeness_retry(self, backend: str) -> None:
        self._likeness_retries.labels(backend=backend).inc()

    def unsafe_output(self, backend: str, policy: str) -> None:
        self._unsafe.labels(backend=backend, policy=_known(policy, SAFETY_POLICIES)).inc()

    def eta_error(self, seconds: float) -> None:
        self._eta_error.observe(seconds)

    def observe_jobs(self, counts: JobCounts | None) -> None:
        """The latest job counts from the database; None when the database could not be read."""
        self._store.counts = counts


def _known(value: str, allowed: frozenset[str]) -> str:
    return value if value in allowed else _OTHER


class _StoreCollector(Collector):
    """Gauges taken from the database: reported as of the last ``observe_jobs``."""

    def __init__(self) -> None:
        self.counts: JobCounts | None = None

    def collect(self) -> Iterator[Metric]:
        counts = self.counts
        up = GaugeMetricFamily("likeness_store_up", "1 if the last read of the job counts succeeded.")
        up.add_metric([], 0 if counts is None else 1)
        yield up
        if counts is None:
            # Stale numbers would look healthy; report none rather than old ones.
            return
        jobs = GaugeMetricFamily("likeness_jobs", "Jobs in the store by current state.", labels=["state"])
        for state, count in sorted(counts.by_state.items()):
            jobs.add_metric([state], count)
        yield jobs
        yield GaugeMetricFamily(
            "likeness_queue_depth",
            "Queued jobs, including those waiting out a retry.",
            value=counts.queue_depth,
        )
        yield GaugeMetricFamily("likeness_queue_due", "Queued jobs a worker could claim now.", value=counts.queue_due)
        yield GaugeMetricFamily(
            "likeness_queue_oldest_age_seconds",
            "How long the longest-waiting queued job has waited.",
            value=counts.oldest_queued_age_s,
        )
        yield GaugeMetricFamily(
            "likeness_deliveries_pending",
            "Finished jobs whose result has not been delivered yet.",
            value=counts.deliveries_pending,
        )
        live = GaugeMetricFamily(
            "likeness_workers", "Live workers (heard from within three heartbeats) by state.", labels=["state"]
        )
        draining = sum(worker.draining for worker in counts.workers)
        live.add_metric(["serving"], len(counts.workers) - draining)
        live.add_metric(["draining"], draining)
        yield live
        free = GaugeMetricFamily(
            "likeness_backend_free_slots", "Free slots over the live workers serving a backend.", labels=["backend"]
        )
        for backend, slots in sorted(served(counts.workers).items()):
            free.add_metric([backend], slots)
        yield free
        info = GaugeMetricFamily(
            "likeness_worker_info",
            "One per live worker: where it runs, its version and GPU (memory in MiB).",
            labels=["worker", "host", "version", "gpu", "gpu_memory_mb"],
        )
        for worker in counts.workers:
            gpu_memory = "" if worker.gpu_memory_mb is None else str(worker.gpu_memory_mb)
            info.add_metric([worker.id, worker.host, worker.version, worker.gpu_name or "", gpu_memory], 1)
        yield info

    def describe(self) -> Iterator[Metric]:
        # Without describe the registry would call collect at registration to learn the names.
        return iter(())
