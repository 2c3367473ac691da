"""The operator's HTTP endpoints: /healthz (alive), /readyz (ready for work) and /metrics (Prometheus)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bot.settings import parse_address
from engine.metrics import Metrics
from storage import stats
from storage.db import Database

log = logging.getLogger(__name__)

# A probe that waits on a stuck database longer than this reports it as not ready.
DB_TIMEOUT_S = 2.0


@dataclass
class HealthServer:
    runner: web.AppRunner
    host: str
    port: int  # the bound port, also when the address asked for port 0

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        await self.runner.cleanup()


class _Handlers:
    def __init__(
        self,
        db: Database,
        metrics: Metrics,
        ready: Callable[[], bool],
        clock: Callable[[], float],
        worker_ttl_s: float = 30.0,
    ) -> None:
        self.worker_ttl_s = worker_ttl_s  # workers silent this long are not counted
        self.db = db
        self.metrics = metrics
        self.ready = ready
        self.clock = clock

    async def healthz(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(self, _request: web.Request) -> web.Response:
        if not self.ready():
            return web.Response(status=503, text="starting")
        try:
            answered = await asyncio.wait_for(self.db.read(stats.ping), timeout=DB_TIMEOUT_S)
        except Exception as exc:  # any failure to reach the store means not ready, whatever its type
            log.warning("readiness: database check failed error=%s", type(exc).__name__)
            answered = False
        if not answered:
            return web.Response(status=503, text="database unavailable")
        return web.Response(text="ready")

    async def metrics_page(self, _request: web.Request) -> web.Response:
        try:
            counts = await asyncio.wait_for(
                self.db.read(stats.job_counts, now=self.clock(), worker_ttl_s=self.worker_ttl_s), timeout=DB_TIMEOUT_S
            )
        except Exception as exc:  # the process metrics are still worth serving without the store's
            log.warning("metrics: job counts unavailable error=%s", type(exc).__name__)
            counts = None
        self.metrics.observe_jobs(counts)
        body = generate_latest(self.metrics.registry)
        response = web.Response(body=body)
        # The exposition content type carries a version parameter, which aiohttp's content_type refuses.
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response


def build_app(
    *,
    db: Database,
    metrics: Metrics,
    ready: Callable[[], bool],
    clock: Callable[[], float] = time.time,
    worker_ttl_s: float = 30.0,
) -> web.Application:
    handlers = _Handlers(db, metrics, ready, clock, worker_ttl_s)
    app = web.Application()
    app.router.add_get("/healthz", handlers.healthz)
    app.router.add_get("/readyz", handlers.readyz)
    app.router.add_get("/metrics", handlers.metrics_page)
    return app


async def start_health_server(
    address: str,
    *,
    db: Database,
    metrics: Metrics,
    ready: Callable[[], bool],
    clock: Callable[[], float] = time.time,
    worker_ttl_s: float = 30.0,
) -> HealthServer | None:
    """Serve the endpoints on ``address`` ("host:port"; port 0 picks a free one); None if it is empty.

    Raises ValueError for an address that is not host:port and OSError when it cannot be bound."""
    parsed = parse_address(address)
    if parsed is None:
        log.info("health and metrics server off")
        return None
    host, port = parsed
    app = build_app(db=db, metrics=metrics, ready=ready, clock=clock, worker_ttl_s=worker_ttl_s)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0][1] if runner.addresses else port
    log.info("health and metrics server listening address=%s:%d", host, bound)
    return HealthServer(runner=runner, host=host, port=int(bound))
