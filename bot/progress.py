"""Status messages kept current, with coalesced edits: a queued job's place in line and estimate as the queue
moves, then a running job's progress. At most one edit per job every few seconds, none that changes nothing.

The queue moves when a job starts or finishes, wherever it runs: those events reach this process through
the progress hub (relayed between processes where the database carries notifications), and a slow poll
catches what no event told. A job that finishes in another process sends this one no "finished" event
where nothing relays them, so what is kept per job is also dropped once the job has been quiet for a while.
Each text is written in the language of the job's user.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from bot import i18n, messages
from bot.frontend import FrontEnd
from bot.service.estimates import Estimates, Place
from bot.service.results import JobTarget, Results
from engine.changes import family
from engine.events import JobProgress, ProgressHub, ProgressKind

log = logging.getLogger(__name__)

QUEUE_MOVES = frozenset({ProgressKind.STARTED, ProgressKind.FINISHED})
SHOWN = frozenset(
    {ProgressKind.BACKEND, ProgressKind.PROVIDER_QUEUE, ProgressKind.RENDERING, ProgressKind.LIKENESS_RETRY}
)


class EtaMetrics(Protocol):
    def eta_error(self, seconds: float) -> None: ...


class ProgressEdits:
    def __init__(
        self,
        results: Results,
        frontends: dict[str, FrontEnd],
        hub: ProgressHub,
        *,
        estimates: Estimates | None = None,
        metrics: EtaMetrics | None = None,
        interval_s: float = 3.0,
        quiet_s: float = 900.0,
        queue_poll_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.results, self.frontends, self.interval_s, self.clock = results, frontends, interval_s, clock
        self.estimates, self.metrics, self.quiet_s, self.queue_poll_s = estimates, metrics, quiet_s, queue_poll_s
        self._latest: dict[str, JobProgress | Place] = {}
        self._shown: dict[str, str] = {}  # the text each status message shows now
        self._last_edit: dict[str, float] = {}
        self._last_event: dict[str, float] = {}
        self._promised: dict[str, float] = {}  # when a queued job's result was first estimated to come
        self._next_sweep = clock() + quiet_s
        self._scheduled: dict[str, asyncio.Task[None]] = {}
        self._queue_pass: asyncio.Task[None] | None = None
        self._queue_poll: asyncio.Task[None] | None = None
        self._last_pass = float("-inf")
        self._unsubscribe = hub.subscribe(self._on_progress)

    def start(self) -> None:
        """Follow the queue: a pass now, then on every move and at the slow poll."""
        if self.estimates is not None and self._queue_poll is None:
            self._queue_poll = asyncio.get_running_loop().create_task(self._poll_queue(), name="queue-status")

    def close(self) -> None:
        self._unsubscribe()
        for task in [*self._scheduled.values(), self._queue_pass, self._queue_poll]:
            if task is not None:
                task.cancel()

    @property
    def tracked(self) -> set[str]:
        """The jobs whose progress is held now."""
        return set(self._latest) | set(self._last_edit) | set(self._last_event) | set(self._scheduled)

    def _forget(self, job_id: str) -> None:
        self._latest.pop(job_id, None)
        self._shown.pop(job_id, None)
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
                self._promised.pop(job_id, None)

    def _on_progress(self, event: JobProgress) -> None:
        now = self.clock()
        self._sweep(now)
        if event.kind in QUEUE_MOVES:
            self._queue_moved()
        if event.kind is ProgressKind.FINISHED:
            self._forget(event.job_id)
            promised = self._promised.pop(event.job_id, None)
            if promised is not None and self.metrics is not None:
                asyncio.get_running_loop().create_task(self._measure(event.job_id, now - promised))
            return
        if event.kind in SHOWN:
            self._show(event.job_id, event, now)
            return
        self._last_event[event.job_id] = now
        if isinstance(self._latest.get(event.job_id), Place):
            self._latest[event.job_id] = event  # started: a place in line waiting to be shown is stale

    def _show(self, job_id: str, what: JobProgress | Place, now: float) -> None:
        """Keep ``what`` as the job's latest state and edit its message with it within the interval."""
        self._last_event[job_id] = now
        # The status message was just posted: the first edit waits a full interval too, so a job that
        # finishes quickly costs no edit at all.
        self._last_edit.setdefault(job_id, now)
        self._latest[job_id] = what
        if job_id not in self._scheduled:
            wait = max(0.0, self._last_edit[job_id] + self.interval_s - self.clock())
            self._scheduled[job_id] = asyncio.get_running_loop().create_task(self._flush(job_id, wait))

    async def _flush(self, job_id: str, wait: float) -> None:
        try:
            await asyncio.sleep(wait)
        finally:
            self._scheduled.pop(job_id, None)
        latest = self._latest.get(job_id)
        if latest is None:
            return
        stored = await self.results.progress_target(job_id)
        if stored is None:
            self._forget(job_id)  # finished meanwhile, maybe elsewhere: the result replaces the status
            return
        frontend = self.frontends.get(stored.platform)
        if frontend is None:
            return
        with i18n.language(stored.language):
            text = _status_text(latest, stored)
            if text is None or self._shown.get(job_id) == text:
                return
            self._last_edit[job_id] = self.clock()
            self._shown[job_id] = text
            try:
                await frontend.show_progress(job_id, frontend.parse_target(stored.data), text)
            except Exception:
                log.warning("progress edit failed", exc_info=True, extra={"job_id": job_id})

    # --- the queue ----------------------------------------------------------------------------------

    def _queue_moved(self) -> None:
        """Schedule a pass over the queue, at most one per interval however often it moves."""
        if self.estimates is None or (self._queue_pass is not None and not self._queue_pass.done()):
            return
        wait = max(0.0, self._last_pass + self.interval_s - self.clock())
        self._queue_pass = asyncio.get_running_loop().create_task(self._pass_after(wait))

    async def _pass_after(self, wait: float) -> None:
        await asyncio.sleep(wait)
        await self.queue_pass()

    async def _poll_queue(self) -> None:
        while True:
            self._queue_moved()
            await asyncio.sleep(self.queue_poll_s)

    async def queue_pass(self) -> None:
        """Each queued job's place and estimate, shown where they changed."""
        assert self.estimates is not None
        self._last_pass = self.clock()
        try:
            places = await self.estimates.queue()
        except Exception:
            log.warning("queue estimate failed", exc_info=True)
            return
        now = self.clock()
        for place in places:
            if place.eta_s is not None:
                self._promised.setdefault(place.job_id, now + place.eta_s)
            if self._latest.get(place.job_id) != place:
                self._show(place.job_id, place, now)

    async def _measure(self, job_id: str, error_s: float) -> None:
        """The estimate's error for a job that got its result (a failed or cancelled one proves nothing)."""
        try:
            if await self.results.succeeded(job_id):
                assert self.metrics is not None
                self.metrics.eta_error(error_s)
        except Exception:
            log.warning("could not measure the estimate's error", exc_info=True, extra={"job_id": job_id})


def _status_text(latest: JobProgress | Place, stored: JobTarget) -> str | None:
    """The status message for the job's latest state, with what rendering it changes of what was asked."""
    if isinstance(latest, Place):
        if not stored.queued:
            return None  # it started since the queue was read
        text: str | None = messages.queued(latest.position, latest.eta_s)
    else:
        text = messages.status_progress(latest)
    if text is None:
        return None
    notes = [messages.change_note(change) for change in stored.changes]
    backend = latest.backend if isinstance(latest, JobProgress) and latest.kind is ProgressKind.BACKEND else None
    if backend and stored.first and family(backend) != family(stored.first) and not stored.changes:
        notes.append(messages.failover_note(backend, family(backend)))
    return "\n".join([text, *notes])
