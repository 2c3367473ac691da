"""The health and metrics server: liveness, readiness against the store, and the Prometheus page."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from bot.health import HealthServer, start_health_server
from bot.settings import SettingsError, load_settings, parse_address
from engine.metrics import Metrics
from storage import jobs
from storage.db import Database
from tests.storage.ledger_helpers import claim, new_user, submit

NOW = 10_000.0


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample on a metrics page, keyed by name and sorted labels."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


class Ready:
    def __init__(self) -> None:
        self.value = False

    def __call__(self) -> bool:
        return self.value


@pytest.fixture
async def served(db: Database) -> AsyncIterator[tuple[HealthServer, Metrics, Ready]]:
    metrics, ready = Metrics(), Ready()
    server = await start_health_server("127.0.0.1:0", db=db, metrics=metrics, ready=ready, clock=lambda: NOW)
    assert server is not None
    try:
        yield server, metrics, ready
    finally:
        await server.stop()


async def fetch(server: HealthServer, path: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as http, http.get(server.url + path) as response:
        return response.status, response.headers["Content-Type"], await response.text()


def test_address_parsing() -> None:
    assert parse_address("") is None
    assert parse_address("  ") is None
    assert parse_address("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_address("0.0.0.0:0") == ("0.0.0.0", 0)
    assert parse_address("[::1]:9464") == ("::1", 9464)
    for bad in ("9464", "localhost", "host:port", ":9464", "127.0.0.1:70000"):
        with pytest.raises(ValueError, match=r"host:port|out of range"):
            parse_address(bad)
        with pytest.raises(SettingsError, match=r"^LIKENESS_METRICS__ADDRESS: "):
            load_settings(_env_file=None, metrics={"address": bad})


async def test_empty_address_starts_nothing(db: Database) -> None:
    assert await start_health_server("", db=db, metrics=Metrics(), ready=lambda: True) is None


async def test_port_zero_reports_the_bound_port(
    served: tuple[HealthServer, Metrics, Ready],
) -> None:
    server, _, _ = served
    assert server.port > 0
    assert server.url == f"http://127.0.0.1:{server.port}"
    assert (await fetch(server, "/healthz"))[::2] == (200, "ok")


async def test_readiness_follows_the_app_and_the_database(
    served: tuple[HealthServer, Metrics, Ready],
) -> None:
    server, _, ready = served
    status, _, body = await fetch(server, "/readyz")
    assert (status, body) == (503, "starting")
    ready.value = True
    status, _, body = await fetch(server, "/readyz")
    assert (status, body) == (200, "ready")


async def test_metrics_page_has_recorded_jobs_and_store_gauges(
    db: Database, served: tuple[HealthServer, Metrics, Ready]
) -> None:
    server, metrics, _ = served
    metrics.job_finished("fal-flux-pulid", "succeeded", 12.0)
    metrics.job_finished("fal-flux-pulid", "succeeded", 40.0)
    metrics.job_finished("fal-flux-pulid", "failed", 3.0)
    metrics.job_finished("local", "succeeded", 700.0)
    metrics.spend("fal-flux-pulid", 0.05)
    metrics.spend("fal-flux-pulid", 0.025)
    metrics.spend("local", 0.0)
    metrics.provider_error("fal-flux-pulid", "transient")
    metrics.provider_error("fal-flux-pulid", "transient")
    metrics.provider_error("segmind-flux-pulid", "not-a-kind")
    metrics.breaker_state("fal-flux-pulid", "open")
    metrics.breaker_state("local", "half_open")
    metrics.breaker_state("replicate-flux-pulid", "closed")

    user = await new_user(db, credits=100)
    for n in range(4):
        await submit(db, f"job-{n}", user, now=NOW - 100 + n)
    running = await claim(db, now=NOW - 50)
    assert running is not None and running.id == "job-0"
    done = await claim(db, now=NOW - 40)
    assert done is not None
    assert await db.write(jobs.complete, job_id=done.id, attempt=done.attempt, images=[], now=NOW - 30)
    # One queued job waits out a retry backoff: in the queue, but not due.
    retried = await claim(db, now=NOW - 20)
    assert retried is not None
    assert await db.write(
        jobs.retry_later,
        job_id=retried.id,
        attempt=retried.attempt,
        run_after=NOW + 60,
        reason="transient",
        now=NOW - 20,
    )

    status, content_type, text = await fetch(server, "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain") and "version=" in content_type
    found = samples(text)

    def value(name: str, **labels: str) -> float:
        return found[(name, tuple(sorted(labels.items())))]

    assert value("likeness_job_duration_seconds_count", backend="fal-flux-pulid") == 3
    assert value("likeness_job_duration_seconds_sum", backend="fal-flux-pulid") == 55.0
    assert value("likeness_job_duration_seconds_bucket", backend="fal-flux-pulid", le="5.0") == 1
    assert value("likeness_job_duration_seconds_bucket", backend="local", le="600.0") == 0
    assert value("likeness_job_duration_seconds_bucket", backend="local", le="+Inf") == 1
    assert value("likeness_jobs_finished_total", backend="fal-flux-pulid", state="succeeded") == 2
    assert value("likeness_jobs_finished_total", backend="fal-flux-pulid", state="failed") == 1
    assert value("likeness_spend_usd_total", backend="fal-flux-pulid") == pytest.approx(0.075)
    assert value("likeness_spend_usd_total", backend="local") == 0
    assert value("likeness_provider_errors_total", backend="fal-flux-pulid", kind="transient") == 2
    assert value("likeness_provider_errors_total", backend="segmind-flux-pulid", kind="other") == 1
    assert value("likeness_breaker_state", backend="fal-flux-pulid") == 2
    assert value("likeness_breaker_state", backend="local") == 1
    assert value("likeness_breaker_state", backend="replicate-flux-pulid") == 0

    assert value("likeness_store_up") == 1
    assert value("likeness_jobs", state="queued") == 2
    assert value("likeness_jobs", state="running") == 1
    assert value("likeness_jobs", state="succeeded") == 1
    assert value("likeness_jobs", state="failed") == 0
    assert value("likeness_queue_depth") == 2
    assert value("likeness_queue_due") == 1
    assert value("likeness_queue_oldest_age_seconds") == 98.0  # job-2, submitted at NOW - 98
    assert value("likeness_deliveries_pending") == 1

    # The gauges follow the store at every scrape.
    assert await db.write(jobs.cancel, job_id="job-3", now=NOW) == jobs.CancelOutcome.CANCELLED
    found = samples((await fetch(server, "/metrics"))[2])
    assert value("likeness_jobs", state="cancelled") == 1
    assert value("likeness_queue_depth") == 1
    assert value("likeness_deliveries_pending") == 2


async def test_separate_registries_do_not_share_series() -> None:
    first, second = Metrics(CollectorRegistry()), Metrics()
    first.job_finished("local", "succeeded", 1.0)
    assert (
        first.registry.get_sample_value("likeness_jobs_finished_total", {"backend": "local", "state": "succeeded"}) == 1
    )
    assert (
        second.registry.get_sample_value("likeness_jobs_finished_total", {"backend": "local", "state": "succeeded"})
        is None
    )


class BrokenDatabase:
    """A store that cannot be reached."""

    async def read(self, operation: Callable[..., Any], /, **kwargs: Any) -> Any:
        raise ConnectionRefusedError("database is down")


async def test_unreachable_database_is_not_ready_and_drops_store_gauges() -> None:
    metrics = Metrics()
    metrics.job_finished("local", "succeeded", 1.0)
    server = await start_health_server(
        "127.0.0.1:0",
        db=BrokenDatabase(),  # type: ignore[arg-type]
        metrics=metrics,
        ready=lambda: True,
    )
    assert server is not None
    try:
        assert (await fetch(server, "/healthz"))[::2] == (200, "ok")
        status, _, body = await fetch(server, "/readyz")
        assert (status, body) == (503, "database unavailable")
        status, _, text = await fetch(server, "/metrics")
        assert status == 200
        found = samples(text)
        assert found[("likeness_store_up", ())] == 0
        assert not any(name == "likeness_queue_depth" for name, _ in found)
        assert found[("likeness_jobs_finished_total", (("backend", "local"), ("state", "succeeded")))] == 1
    finally:
        await server.stop()
