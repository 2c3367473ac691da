"""Progress edits to status messages, coalesced: at most one edit per job every few seconds."""

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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.results, self.frontends, self.interval_s, self.clock = results, frontends, interval_s, clock
        self._latest: dict[str, str] = {}
        self._last_edit: dict[str, float] = {}
        self._scheduled: dict[str, asyncio.Task[None]] = {}
        self._unsubscribe = hub.subscribe(self._on_progress)

    def close(self) -> None:
        self._unsubscribe()
        for task in self._scheduled.values():
            task.cancel()

    def _on_progress(self, event: JobProgress) -> None:
        if event.kind is ProgressKind.FINISHED:
            self._latest.pop(event.job_id, None)
            self._last_edit.pop(event.job_id, None)
            return
        # The status message was just posted: the first edit waits a full interval too, so a job that
        # finishes quickly costs no edit at all.
        self._last_edit.setdefault(event.job_id, self.clock())
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
            return  # finished meanwhile: the result replaces the status
        frontend = self.frontends.get(stored.platform)
        if frontend is None:
            return
        self._last_edit[job_id] = self.clock()
        try:
            await frontend.show_progress(job_id, frontend.parse_target(stored.data), text)
        except Exception:
            log.warning("progress edit failed", exc_info=True, extra={"job_id": job_id})
