"""Delivering finished jobs from the job table, so a restart still delivers every result once."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from bot.frontend import FrontEnd, Undeliverable
from bot.service.core import LikenessService
from engine.events import JobProgress, ProgressHub, ProgressKind
from storage import jobs
from storage.db import Database
from storage.models import Job
from storage.states import DeliveryState

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
CONCURRENT = 32  # sends in flight at once; each job is in one pass only, so none is sent twice


class Delivery:
    def __init__(
        self,
        db: Database,
        service: LikenessService,
        frontends: dict[str, FrontEnd],
        hub: ProgressHub,
        *,
        poll_s: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db, self.service, self.frontends = db, service, frontends
        self.poll_s, self.clock = poll_s, clock
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
        pending = await self.db.read(jobs.pending_deliveries, platforms=list(self.frontends), limit=100)
        slots = asyncio.Semaphore(CONCURRENT)

        async def bounded(job: Job) -> None:
            async with slots:
                await self._deliver(job)

        await asyncio.gather(*(bounded(job) for job in pending))
        return len(pending)

    async def _deliver(self, job: Job) -> None:
        platform = job.reply_target.get("platform")
        frontend = self.frontends.get(str(platform))
        if frontend is None:
            return
        try:
            reply = await self.service.result(job)
            path = await frontend.deliver(job, reply)
        except Undeliverable as exc:
            log.warning("result undeliverable: %s", exc, extra={"job_id": job.id})
            await self._mark(job, DeliveryState.UNDELIVERABLE, None)
            return
        except Exception:
            attempts = await self.db.write(jobs.count_delivery_attempt, job_id=job.id, now=self.clock())
            log.exception("delivery failed (attempt %d)", attempts, extra={"job_id": job.id})
            if attempts >= MAX_ATTEMPTS:
                await self._mark(job, DeliveryState.UNDELIVERABLE, None)
            return
        await self._mark(job, DeliveryState.DELIVERED, path)
        log.info("result delivered via %s", path, extra={"job_id": job.id})

    async def _mark(self, job: Job, state: DeliveryState, path: str | None) -> None:
        await self.db.write(jobs.mark_delivery, job_id=job.id, state=state, path=path, now=self.clock())
