"""Delivering finished jobs from the job table, so a restart still delivers every result once.

A try that fails for a reason that may pass (an outage, a rate limit) is retried with growing waits; the
next try's time is on the job row, so retries survive restarts. Only a permanent refusal (the user blocked
the bot, the chat is gone), or the retry window running out, ends it early: the result is then marked
undeliverable and refunded. A reply of several messages resumes after the last one that arrived.
"""

from __future__ import annotations

import asyncio
import logging

from bot.frontend import DeliveryDeferred, DeliveryParts, FrontEnd, Undeliverable
from bot.service.results import PendingResult, Results
from bot.settings import DeliverySettings
from engine.clock import SYSTEM_CLOCK, Clock, backoff_delay
from engine.events import JobProgress, ProgressHub, ProgressKind

log = logging.getLogger(__name__)

CONCURRENT = 32  # sends in flight at once; each job is in one pass only, so none is sent twice


class Delivery:
    def __init__(
        self,
        results: Results,
        frontends: dict[str, FrontEnd],
        hub: ProgressHub,
        *,
        settings: DeliverySettings | None = None,
        clock: Clock = SYSTEM_CLOCK,
        poll_s: float = 2.0,
    ) -> None:
        self.results, self.frontends, self.poll_s = results, frontends, poll_s
        self.settings, self.clock = settings or DeliverySettings(), clock
        self._wake = asyncio.Event()
        self._soonest: float | None = None  # the earliest retry this process scheduled
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
            _done, pending = await asyncio.wait(waiters, timeout=self._pause(), return_when=asyncio.FIRST_COMPLETED)
            for waiter in pending:
                waiter.cancel()

    def _pause(self) -> float:
        """Until the next pass: the poll interval, or less when a retry falls due sooner."""
        if self._soonest is None:
            return self.poll_s
        return min(self.poll_s, max(0.0, self._soonest - self.clock.time()))

    async def deliver_pending(self) -> int:
        """One pass over the results due now; returns how many were tried."""
        self._soonest = None
        pending = await self.results.pending(list(self.frontends), limit=100)
        slots = asyncio.Semaphore(CONCURRENT)

        async def bounded(stored: PendingResult) -> None:
            async with slots:
                await self._deliver(stored)

        await asyncio.gather(*(bounded(stored) for stored in pending))
        return len(pending)

    async def _deliver(self, stored: PendingResult) -> None:
        job_id = stored.job_id
        frontend = self.frontends.get(stored.target.platform)
        if frontend is None:
            return

        async def record(parts: int) -> None:
            await self.results.parts_sent(job_id, parts)

        try:
            reply = await self.results.reply(job_id)
            if reply is None:
                return  # forgotten since it was listed
            parts = DeliveryParts(stored.parts_sent, record)
            path = await frontend.deliver(job_id, frontend.parse_target(stored.target.data), reply, parts)
        except Undeliverable as exc:
            log.warning("result undeliverable: %s", exc, extra={"job_id": job_id})
            await self._give_up(job_id)
            return
        except DeliveryDeferred as exc:
            log.warning("delivery deferred: %s", exc, extra={"job_id": job_id})
            await self._retry(stored, exc.retry_after_s)
            return
        except Exception:
            log.exception("delivery failed", extra={"job_id": job_id})
            await self._retry(stored, None)
            return
        await self.results.delivered(job_id, path)
        log.info("result delivered via %s", path, extra={"job_id": job_id})

    async def _retry(self, stored: PendingResult, retry_after_s: float | None) -> None:
        """Schedule the next try with a growing wait, or give up once the retry window since the first
        failure is spent."""
        now = self.clock.time()
        failing_since = now if stored.failing_since is None else stored.failing_since
        if now - failing_since >= self.settings.retry_window_s:
            log.warning(
                "result undeliverable: still failing after %d tries over %.0fs",
                stored.attempts + 1,
                now - failing_since,
                extra={"job_id": stored.job_id},
            )
            await self._give_up(stored.job_id)
            return
        delay = backoff_delay(
            stored.attempts + 1,
            base_s=self.settings.retry_base_s,
            cap_s=self.settings.retry_cap_s,
            jitter=self.clock.jitter(),
            retry_after_s=retry_after_s,
        )
        # The last try falls at the window's end, not a whole wait past it.
        when = min(now + delay, failing_since + self.settings.retry_window_s)
        tries = await self.results.retry_at(stored.job_id, when)
        self._soonest = when if self._soonest is None else min(self._soonest, when)
        log.info("delivery try %d failed; next in %.0fs", tries, when - now, extra={"job_id": stored.job_id})

    async def _give_up(self, job_id: str) -> None:
        if await self.results.undeliverable(job_id):
            log.info("undeliverable result refunded if it was charged", extra={"job_id": job_id})
