"""`likeness run` and `likeness worker`: the long-running processes, stopped cleanly by SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from bot.health import start_health_server
from bot.runtime import Runtime, open_runtime
from bot.settings import Settings

log = logging.getLogger(__name__)


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)


async def run_worker(settings: Settings) -> None:
    """Dispatcher only: claims jobs from the shared database and renders them."""
    stop = asyncio.Event()
    _stop_on_signals(stop)
    async with open_runtime(settings) as runtime:
        health = await start_health_server(
            settings.metrics.address, db=runtime.db, metrics=runtime.metrics, ready=lambda: not stop.is_set()
        )
        log.info("worker started; route %s", ",".join(runtime.router.route) or "(empty)")
        try:
            await runtime.dispatcher.run(stop)
        finally:
            if health is not None:
                await health.stop()
    log.info("worker stopped")


async def run_service(settings: Settings) -> None:
    """Front ends for every configured token, the dispatcher and result delivery, in one loop."""
    stop = asyncio.Event()
    _stop_on_signals(stop)
    async with open_runtime(settings) as runtime:
        await serve(runtime, stop)


async def serve(runtime: Runtime, stop: asyncio.Event) -> None:
    from bot.app import Application

    app = Application(runtime)
    try:
        await app.start()
        await runtime.dispatcher.run(stop)
    finally:
        await app.stop()
