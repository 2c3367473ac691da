"""`likeness worker`: the dispatcher on the shared database, with the engine and storage parts only."""

from __future__ import annotations

import logging

from bot.settings import Settings
from bot.wiring.engine import open_engine
from bot.wiring.process import start_health, stop_on_signals

log = logging.getLogger(__name__)


async def run_worker(settings: Settings) -> None:
    """Claim jobs from the shared database and render them until SIGINT or SIGTERM; no front ends."""
    stop = stop_on_signals()
    async with open_engine(settings) as parts:
        health = await start_health(parts, ready=lambda: not stop.is_set())
        log.info("worker started; serves %s", ",".join(parts.dispatcher.serves()) or "nothing")
        parts.register()
        try:
            await parts.dispatcher.run(stop, drain_s=settings.dispatch.drain_s)
        finally:
            if health is not None:
                await health.stop()
    log.info("worker stopped")
