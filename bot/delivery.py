"""Delivering finished jobs from the job table, so a restart still delivers every result once."""

from __future__ import annotations

import asyncio
import logging

from bot.frontend import FrontEnd, Undeliverable
from bot.service.results import JobTarget, Results
from engine.events import JobProgress, ProgressHub, ProgressKind

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
CONCURRENT = 32  # sends in flight at once; each job is in one pass only, so none is sent twice


class Delivery:
    def __init__(
        self, results: Results, frontends: dict[str, FrontEnd], hub: ProgressHub, *, poll_s: float = 2.0
    ) -> None:
        self.results, self.frontends, self.poll_s = results, frontends, poll_s
        self._wake = asyncio.Event()
        hub.subscribe(self._on_progress)

    def _on_progress(self, event: JobProgress) -> None:
        if event.kind is ProgressKind.FINISHED:
            self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._wake.clear()
            try:
                await self.deliver_pending()
            except Exception:
                log.exception("delivery pass failed")
            waiters = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())}
            _done, pending = await asyncio.wait(waiters, timeout=self.poll_s, return_when=asyncio.FIRST_COMPLETED)
            for waiter in pending:
                waiter.cancel()

    async def deliver_pending(self) -> int:
        pending = await self.results.pending(list(self.frontends), limit=100)
        slots = asyncio.Semaphore(CONCURRENT)

        async def bounded(target: JobTarget) -> None:
            async with slots:
                await self._deliver(target)

        await asyncio.gather(*(bounded(target) for target in pending))
        return len(pending)

    async def _deliver(self, stored: JobTarget) -> None:
        job_id = stored.job_id
        frontend = self.frontends.get(stored.platform)
        if frontend is None:
            return
        try:
            reply = await self.results.reply(job_id)
            if reply is None:
                return  # forgotten since it was listed
            path = await frontend.deliver(job_id, frontend.parse_target(stored.data), reply)
        except Undeliverable as exc:
            log.warning("result undeliverable: %s", exc, extra={"job_id": job_id})
            await self.results.undeliverable(job_id)
            return
        except Exception:
            attempts = await self.results.failed_attempt(job_id)
            log.exception("delivery failed (attempt %d)", attempts, extra={"job_id": job_id})
            if attempts >= MAX_ATTEMPTS:
                await self.results.undeliverable(job_id)
            return
        await self.results.delivered(job_id, path)
        log.info("result delivered via %s", path, extra={"job_id": job_id})
