"""`likeness run`: front ends, dispatcher, delivery, progress edits, health, retention and reconciliation."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from bot.alerts import BudgetAlerts
from bot.delivery import Delivery
from bot.progress import ProgressEdits
from bot.retention import retention_loop
from bot.service.use_cases import LikenessService
from bot.settings import Settings
from bot.wiring.engine import EngineParts, open_engine
from bot.wiring.frontends import build_frontends, start_frontends, stop_frontends
from bot.wiring.process import start_health, stop_on_signals
from storage import reconcile
from storage.db import Database

log = logging.getLogger(__name__)

RETENTION_INTERVAL_S = 3600.0
RECONCILE_INTERVAL_S = 600.0
BACKGROUND_STOP_S = 5.0
DELIVERY_POLL_S = 2.0


async def run_service(settings: Settings) -> None:
    """The whole service in one process until SIGINT or SIGTERM."""
    stop = stop_on_signals()
    async with open_engine(settings) as parts:
        await serve(parts, stop)


async def serve(parts: EngineParts, stop: asyncio.Event) -> None:
    """Serve the chat front ends around the dispatcher until ``stop`` is set, then close everything."""
    settings = parts.settings
    service = LikenessService(
        db=parts.db,
        blobs=parts.blobs,
        router=parts.router,
        settings=settings,
        notify=parts.job_queued,
        judge=parts.judge,
    )
    frontends = build_frontends(settings, service)
    # Where notifications announce finished jobs (PostgreSQL), the delivery poll is only a fallback.
    poll_s = settings.dispatch.safety_poll_s if parts.notifier.connected else DELIVERY_POLL_S
    delivery = Delivery(service.results, frontends, parts.hub, settings=settings.delivery, poll_s=poll_s)
    progress = ProgressEdits(service.results, frontends, parts.hub, estimates=service.estimates, metrics=parts.metrics)
    ready = asyncio.Event()
    background_stop = asyncio.Event()
    async with contextlib.AsyncExitStack() as closing:  # closed in reverse: background, health, front ends
        # Registered before anything starts, so whatever did start is stopped when a later step fails.
        closing.push_async_callback(stop_frontends, frontends)
        health = await start_health(parts, ready=ready.is_set)
        if health is not None:
            closing.push_async_callback(health.stop)
        await start_frontends(settings, frontends)
        progress.start()
        background = [
            asyncio.create_task(delivery.run(background_stop), name="delivery"),
            asyncio.create_task(
                retention_loop(
                    parts.db,
                    parts.blobs,
                    days=settings.retention.days,
                    interval_s=RETENTION_INTERVAL_S,
                    stop=background_stop,
                ),
                name="retention",
            ),
            asyncio.create_task(reconcile_loop(parts.db, background_stop), name="reconcile"),
            asyncio.create_task(
                BudgetAlerts(parts.db, frontends, settings.admins, parts.router.budget).run(background_stop),
                name="budget-alerts",
            ),
        ]
        closing.push_async_callback(_stop_background, background, background_stop, progress, ready)
        ready.set()
        parts.register()
        await parts.dispatcher.run(stop, drain_s=settings.dispatch.drain_s)


async def _stop_background(
    tasks: list[asyncio.Task[None]], stop: asyncio.Event, progress: ProgressEdits, ready: asyncio.Event
) -> None:
    ready.clear()
    stop.set()
    progress.close()
    for task in tasks:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, BACKGROUND_STOP_S)


async def reconcile_loop(db: Database, stop: asyncio.Event, *, interval_s: float = RECONCILE_INTERVAL_S) -> None:
    """Check the quota books now and then; drift is an operator alarm, never silently fixed."""
    while not stop.is_set():
        try:
            drift = await db.read(reconcile.find_drift)
        except Exception:
            log.exception("quota reconciliation failed")
        else:
            for entry in drift:
                log.error(
                    "quota drift %s: expected %d, found %d (user %s)",
                    entry.kind, entry.expected, entry.found, entry.user_id, extra={"job_id": entry.job_id},
                )  # fmt: skip
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
