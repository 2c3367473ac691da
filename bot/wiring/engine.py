"""The engine side of every process: backends, router, dispatcher and metrics over the opened store."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator

import aiohttp

from bot.settings import Settings
from bot.wiring.faces import open_face_judge, open_safety_classifier
from bot.wiring.store import check_blobs, open_blobs, open_database
from engine.backend import Backend
from engine.budget import BudgetGauges, BudgetGuard, Estimator, default_prices
from engine.catalogue import BACKEND_NAMES, LOCAL
from engine.dispatch import Dispatcher
from engine.events import ProgressHub, ProgressRelay
from engine.fleet import FleetView, Registration, detect_gpu
from engine.judge import FaceJudge
from engine.judging import Judging
from engine.metrics import Metrics
from engine.providers.registry import build_provider_backends
from engine.routing import Router
from storage import notify
from storage.blobs import BlobStore
from storage.db import Database
from storage.notify import Notifier

log = logging.getLogger(__name__)


@dataclasses.dataclass
class EngineParts:
    """What one process opened: the store, the backends behind the router, and the dispatcher."""

    settings: Settings
    db: Database
    blobs: BlobStore
    http: aiohttp.ClientSession
    hub: ProgressHub
    router: Router
    dispatcher: Dispatcher
    metrics: Metrics
    notifier: Notifier
    fleet: FleetView
    judge: FaceJudge | None = None  # checks face photos and scores results; None with the judge off
    _sending: set[asyncio.Task[None]] = dataclasses.field(default_factory=set)

    def job_queued(self) -> None:
        """A job was queued here: this process's dispatcher and, through the database, every worker look
        for work now."""
        self.dispatcher.notify()
        if self.notifier.connected:
            task = asyncio.get_running_loop().create_task(self.notifier.send(notify.JOBS))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    def register(self) -> None:
        """Keep this process's row in the worker registry while its dispatcher runs (when it renders)."""
        if self.settings.dispatch.concurrency == 0:
            return
        gpu = detect_gpu() if LOCAL in self.router.backends else None
        self.dispatcher.registration = Registration(
            self.db,
            worker_id=self.dispatcher.worker_id,
            serving=self.dispatcher.serving,
            ttl_s=worker_ttl_s(self.settings),
            gpu=gpu,
        )


def worker_ttl_s(settings: Settings) -> float:
    """A worker silent for three heartbeats is dead: its row stops counting and is deleted."""
    return 3 * settings.queue.heartbeat_s


def build_backends(settings: Settings, http: aiohttp.ClientSession) -> dict[str, Backend]:
    """Every provider backend, and the local engine when it is enabled; none in a process that renders
    nothing (``LIKENESS_DISPATCH__CONCURRENCY=0``)."""
    if settings.dispatch.concurrency == 0:
        return {}
    backends = build_provider_backends(
        http,
        fal=settings.fal,
        replicate=settings.replicate,
        wavespeed=settings.wavespeed,
        segmind=settings.segmind,
    )
    if settings.local.enabled:
        from engine.local.backend import LocalBackend  # torch and friends only where the engine runs

        backends[LOCAL] = LocalBackend(settings.local_settings)
    return backends


def default_route(settings: Settings, backends: dict[str, Backend]) -> list[str]:
    """LIKENESS_ROUTE, or every configured backend in the catalogue's order."""
    if settings.route:
        return list(settings.route)
    return [name for name in BACKEND_NAMES if name in backends and backends[name].unavailable_reason() is None]


def open_budget(settings: Settings, db: Database, metrics: Metrics) -> BudgetGuard:
    """The daily budgets (LIKENESS_BUDGET__DAILY_USD) over each backend's documented price."""
    prices = default_prices(
        replicate_usd_per_s=settings.replicate.usd_per_second, segmind_usd_per_image=settings.segmind.usd_per_image
    )
    return BudgetGuard(db, settings.budget.daily_usd, Estimator(prices), metrics=BudgetGauges(metrics.registry))


def worker_id() -> str:
    """Names this process in the ledger's leases: host, pid and a few random characters."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@contextlib.asynccontextmanager
async def open_engine(settings: Settings) -> AsyncIterator[EngineParts]:
    """Open the store and wire the engine over it; everything is closed when the block ends."""
    db = await open_database(settings)
    try:
        async with aiohttp.ClientSession() as http:
            backends = build_backends(settings, http)
            route = default_route(settings, backends)
            for name in route if backends else ():  # a process that renders nothing routes to workers
                reason = backends[name].unavailable_reason() if name in backends else "not installed"
                if reason:
                    log.warning("backend %s in the route is unavailable: %s", name, reason)
            metrics = Metrics()
            fleet = FleetView(db, ttl_s=worker_ttl_s(settings))
            breakers = Dispatcher.breakers_for(list(backends), settings.dispatch)
            router = Router(backends, route, breakers, fleet=fleet)
            router.budget = open_budget(settings, db, metrics)
            hub = ProgressHub()
            blobs = open_blobs(settings)
            await check_blobs(blobs)
            judge = open_face_judge(settings)
            renders = settings.dispatch.concurrency > 0
            judging = Judging(
                db,
                blobs,
                judge=judge,
                settings=settings.judge,
                safety=open_safety_classifier(settings, local=LOCAL in backends) if renders else None,
                safety_settings=settings.safety,
                hub=hub,
                metrics=metrics,
            )
            dispatcher = Dispatcher(
                db,
                blobs,
                router,
                settings=settings.dispatch,
                queue=settings.queue,
                hub=hub,
                worker_id=worker_id(),
                metrics=metrics,
            )
            dispatcher.judging = judging
            notifier = notify.open_notifier(db)
            relay = ProgressRelay(hub, notifier, origin=dispatcher.worker_id)
            if settings.dispatch.concurrency > 0:
                notifier.listen(notify.JOBS, lambda _payload: dispatcher.notify())
            # Woken by notifications, the claim loop polls only as a fallback for a lost one.
            dispatcher.idle_poll = lambda: (
                settings.dispatch.safety_poll_s if notifier.connected else settings.dispatch.poll_s
            )
            await notifier.start()
            relay.start()
            try:
                yield EngineParts(settings, db, blobs, http, hub, router, dispatcher, metrics, notifier, fleet, judge)
            finally:
                await relay.close()
                await notifier.close()
                for backend in backends.values():
                    close = getattr(backend, "close", None)
                    if close is not None:
                        await close()
    finally:
        await db.dispose()
