"""Progress edits to status messages, coalesced: at most one edit per job every few seconds.

A job that finishes in another process (a worker elsewhere, a lease taken over) sends this one no
"finished" event, so what is kept per job is also dropped once the job has been quiet for a while.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from bot import messages
from bot.frontend import FrontEnd
from bot.service.results import Results
from engine.events import JobProgress, ProgressHub, ProgressKind

log = logging.getLogger(__name__)


class ProgressEdits:
    def __init__(
        self,
        results: Results,
        frontends: dict[str, FrontEnd],
        hub: ProgressHub,
        *,
        interval_s: float = 3.0,
        quiet_s: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.results, self.frontends, self.interval_s, self.clock = results, frontends, interval_s, clock
        self.quiet_s = quiet_s
        self._latest: dict[str, str] = {}
        self._last_edit: dict[str, float] = {}
        self._last_event: dict[str, float] = {}
        self._next_sweep = clock() + quiet_s
        self._scheduled: dict[str, asyncio.Task[None]] = {}
        self._unsubscribe = hub.subscribe(self._on_progress)

    def close(self) -> None:
        self._unsubscribe()
        for task in self._scheduled.values():
            task.cancel()

    @property
    def tracked(self) -> set[str]:
        """The jobs whose progress is held now."""
        return set(self._latest) | set(self._last_edit) | set(self._last_event) | set(self._scheduled)

    def _forget(self, job_id: str) -> None:
        self._latest.pop(job_id, None)
        self._last_edit.pop(job_id, None)
        self._last_event.pop(job_id, None)

    def _sweep(self, now: float) -> None:
        """Drop the jobs quiet for ``quiet_s``: they finished where this process could not see it."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + self.quiet_s
        for job_id in [j for j, at in self._last_event.items() if now - at >= self.quiet_s]:
            if job_id not in self._scheduled:
                self._forget(job_id)

    def _on_progress(self, event: JobProgress) -> None:
        now = self.clock()
        self._sweep(now)
        if event.kind is ProgressKind.FINISHED:
            self._forget(event.job_id)
            return
        self._last_event[event.job_id] = now
        # The status message was just posted: the first edit waits a full interval too, so a job that
        # finishes quickly costs no edit at all.
        self._last_edit.setdefault(event.job_id, now)
        text = messages.status_progress(event)
        if text is None or self._latest.get(event.job_id) == text:
            return
        self._latest[event.job_id] = text
        if event.job_id not in self._scheduled:
            wait = max(0.0, self._last_edit[event.job_id] + self.interval_s - self.clock())
            self._scheduled[event.job_id] = asyncio.get_running_loop().create_task(self._flush(event.job_id, wait))

    async def _flush(self, job_id: str, wait: float) -> None:
        try:
            await asyncio.sleep(wait)
        finally:
            self._scheduled.pop(job_id, None)
        text = self._latest.get(job_id)
        if text is None:
            return
        stored = await self.results.progress_target(job_id)
        if stored is None:
            self._forget(job_id)  # finished meanwhile, maybe elsewhere: the result replaces the status
            return
        frontend = self.frontends.get(stored.platform)
        if frontend is None:
            return
        self._last_edit[job_id] = self.clock()
        try:
            await frontend.show_progress(job_id, frontend.parse_target(stored.data), text)
        except Exception:
            log.warning("progress edit failed", exc_info=True, extra={"job_id": job_id})
