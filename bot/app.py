"""The long-running service: front ends, delivery, progress edits, health server and retention."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from bot.delivery import Delivery
from bot.frontend import FrontEnd
from bot.health import HealthServer, start_health_server
from bot.progress import ProgressEdits
from bot.retention import retention_loop
from bot.runtime import Runtime
from bot.service.core import LikenessService
from storage import quota

log = logging.getLogger(__name__)

RETENTION_INTERVAL_S = 3600.0
RECONCILE_INTERVAL_S = 600.0


class Application:
    """Everything `likeness run` runs beside the dispatcher, sharing one event loop."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        settings = runtime.settings
        self.service = LikenessService(
            db=runtime.db,
            blobs=runtime.blobs,
            router=runtime.router,
            settings=settings,
            notify=runtime.dispatcher.notify,
        )
        self.frontends: dict[str, FrontEnd] = {}
        if settings.telegram.token is not None:
            from bot.telegram.frontend import TelegramFrontEnd

            self.frontends["telegram"] = TelegramFrontEnd(settings.telegram, self.service)
        if settings.discord.token is not None:
            from bot.discord.frontend import DiscordFrontEnd

            self.frontends["discord"] = DiscordFrontEnd(settings.discord, self.service)
        self.delivery = Delivery(runtime.db, self.service, self.frontends, runtime.hub)
        self.progress = ProgressEdits(runtime.db, self.frontends, runtime.hub)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._health: HealthServer | None = None
        self.ready = False

    async def start(self) -> None:
        runtime = self.runtime
        self._health = await start_health_server(
            runtime.settings.metrics.address, db=runtime.db, metrics=runtime.metrics, ready=lambda: self.ready
        )
        for name, frontend in self.frontends.items():
            await frontend.start()
            log.info("%s front end started", name)
        if not self.frontends:
            log.warning("no front end configured: set LIKENESS_TELEGRAM__TOKEN or LIKENESS_DISCORD__TOKEN")
        self._tasks = [
            asyncio.create_task(self.delivery.run(self._stop), name="delivery"),
            asyncio.create_task(
                retention_loop(
                    runtime.db,
                    runtime.blobs,
                    days=runtime.settings.retention.days,
                    interval_s=RETENTION_INTERVAL_S,
                    stop=self._stop,
                ),
                name="retention",
            ),
        ]
        self._tasks.append(asyncio.create_task(self._reconcile_loop(), name="reconcile"))
        self.ready = True

    async def _reconcile_loop(self) -> None:
        """Check the quota books now and then; drift is an operator alarm, never silently fixed."""
        while not self._stop.is_set():
            try:
                drift = await self.runtime.db.read(quota.reconcile)
            except Exception:
                log.exception("quota reconciliation failed")
            else:
                for entry in drift:
                    log.error(
                        "quota drift %s: expected %d, found %d (user %s)",
                        entry.kind, entry.expected, entry.found, entry.user_id, extra={"job_id": entry.job_id},
                    )  # fmt: skip
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), RECONCILE_INTERVAL_S)

    async def stop(self) -> None:
        self.ready = False
        self._stop.set()
        self.progress.close()
        for task in self._tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 5)
        for frontend in self.frontends.values():
            try:
                await frontend.stop()
            except Exception:
                log.exception("front end %s did not stop cleanly", frontend.platform)
        if self._health is not None:
            await self._health.stop()
