"""The dispatcher: claims jobs from the ledger and runs them, each under a heartbeat, until told to stop.

Per job: heartbeat the lease (which also carries cancel requests and the deadline) while the render runs
(``engine.attempt``: route, failover, and each backend's gate of slots, rate, breaker and backoff), then
record the outcome (``engine.outcome``) — charging on success, refunding on failure or cancel. A
provider's request id is stored before waiting on it, so a restarted dispatcher resumes polling instead of
paying twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from engine.attempt import Attempt, Renderer
from engine.backend import GenerationResult
from engine.clock import SYSTEM_CLOCK, Clock
from engine.events import JobProgress, ProgressHub, ProgressKind
from engine.fleet import Registration
from engine.gate import BackendGate, CircuitBreaker
from engine.judging import Judging
from engine.metrics import NULL_METRICS, JobMetrics
from engine.outcome import record, settle
from engine.routing import Router
from engine.settings import DispatchSettings
from storage import jobs
from storage.blobs import BlobStore
from storage.db import Database
from storage.models import Job
from storage.settings import QueueSettings

log = logging.getLogger(__name__)


class Dispatcher:
    """Claims jobs while this process has room and runs each under a heartbeat: ``run`` in a service,
    ``drain`` for one batch. Every wait and every timestamp comes from ``clock``."""

    def __init__(
        self,
        db: Database,
        blobs: BlobStore,
        router: Router,
        *,
        settings: DispatchSettings,
        queue: QueueSettings,
        hub: ProgressHub,
        worker_id: str,
        metrics: JobMetrics = NULL_METRICS,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.db, self.blobs, self.router = db, blobs, router
        self.settings, self.queue, self.hub = settings, queue, hub
        self.worker_id = worker_id
        self.metrics = metrics
        self.clock = clock
        self.stopping = False
        # Set by the wiring: this process's row in the worker registry (claims then take only jobs it can
        # serve), the wait between claim polls (long where notifications wake the loop), and the judging step
        # that scores, re-renders and safety-checks each result (None: results go out as rendered).
        self.registration: Registration | None = None
        self.idle_poll: Callable[[], float] = lambda: settings.poll_s
        self.judging: Judging | None = None
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._running: dict[str, Attempt] = {}  # job id -> its attempt here, until its outcome is recorded
        self.gates = {
            name: BackendGate(name, settings, breaker=router.breakers.get(name), clock=clock, metrics=metrics)
            for name in router.backends
        }
        self._renderer = Renderer(db, blobs, router, self.gates, hub=hub, clock=clock, stopping=lambda: self.stopping)

    @staticmethod
    def breakers_for(
        names: list[str], settings: DispatchSettings, *, clock: Clock = SYSTEM_CLOCK
    ) -> dict[str, CircuitBreaker]:
        """One circuit per backend, for the router (which skips open ones) and the gates (which trip them)."""
        return {name: CircuitBreaker(settings.breaker_threshold, settings.breaker_cooldown_s, clock) for name in names}

    def notify(self) -> None:
        """A job was submitted (here, or elsewhere and announced): look for work now, not at the next poll."""
        self._wake.set()

    def serves(self) -> list[str]:
        """Backends of this process's route that are configured here: the jobs it claims name one of them."""
        return [name for name in self.router.route if self.router.backends[name].unavailable_reason() is None]

    def serving(self) -> dict[str, int]:
        """What this process can take now, for the worker registry: backend (circuit closed) -> free slots."""
        if self.settings.concurrency == 0:
            return {}
        room = max(0, self.settings.concurrency - len(self._tasks))
        in_flight: dict[str, int] = {}
        for attempt in self._running.values():
            if attempt.job.backend is not None:
                in_flight[attempt.job.backend] = in_flight.get(attempt.job.backend, 0) + 1
        limits, default = self.settings.backend_concurrency, self.settings.default_backend_concurrency
        return {
            name: max(0, min(room, limits.get(name, default) - in_flight.get(name, 0)))
            for name in self.router.available()
            if name in self.router.route
        }

    # --- the claim loop -----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, *, drain_s: float | None = None, only: str | None = None) -> None:
        """Claim and run jobs until ``stop`` is set. Then, with ``drain_s``, let running jobs finish within it
        and hand the rest back to the queue; without, drop them for their leases to expire.

        With ``only``, claim that job alone (again after a retry wait) and sweep nothing: a process run for
        one job (`likeness generate`) leaves every other job to the workers that serve the queue."""
        last_sweep = last_beat = last_claim = -float("inf")
        claim_now = True
        stopper = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                now = self.clock.time()
                if only is None and now - last_sweep >= self.queue.lease_s / 2:
                    last_sweep = now
                    await self._sweep(now)
                if self.registration is not None and now - last_beat >= self.queue.heartbeat_s:
                    last_beat = now
                    await self.registration.beat()
                # A claim when woken (a job queued, one of ours ended) or at the poll; not at every chore,
                # so an idle worker costs the database a few statements a minute.
                if claim_now or now - last_claim >= self.idle_poll():
                    last_claim = now
                    self._wake.clear()  # before claiming: a job announced meanwhile wakes the next round
                    try:
                        await self.claim_available(only=only, peek=not claim_now)
                    except Exception:  # the database may be briefly unreachable: try again at the next poll
                        log.exception("claiming jobs failed")
                # Sleep until the next poll, sweep or registration beat, whichever comes first.
                due = [last_claim + self.idle_poll() - now]
                if only is None:
                    due.append(last_sweep + self.queue.lease_s / 2 - now)
                if self.registration is not None:
                    due.append(last_beat + self.queue.heartbeat_s - now)
                timer = asyncio.ensure_future(self.clock.sleep(max(0.0, min(due))))
                woken = asyncio.ensure_future(self._wake.wait())
                waits: set[asyncio.Future[Any]] = {stopper, timer, woken, *self._tasks}
                done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                claim_now = woken in done or bool(done - {stopper, timer})  # woken, or a job of ours ended
                for future in pending:
                    if future is not stopper and future not in self._tasks:
                        future.cancel()
        finally:
            stopper.cancel()
            if drain_s is None:
                await self.abandon()
            else:
                await self.wind_down(drain_s)
            if self.registration is not None:
                await self.registration.remove()

    async def _sweep(self, now: float) -> None:
        try:
            expired, overdue = await self.db.write(jobs.sweep, now=now)
        except Exception:
            log.exception("lease sweep failed")
            return
        for job_id in expired:
            log.info("lease expired; job back in the queue or ended", extra={"job_id": job_id})
        for job_id in overdue:
            log.warning("job passed its deadline in the queue; refunded", extra={"job_id": job_id})
            # The front ends tell the user, as for any job that ends.
            self.hub.publish(JobProgress(job_id, ProgressKind.FINISHED))

    async def claim_available(self, *, only: str | None = None, peek: bool = False) -> int:
        """Claim jobs (with ``only``, that job alone) while this process has free slots; returns how many it
        started. ``peek``: a poll nothing announced, which most likely finds the queue empty."""
        started = 0
        while len(self._tasks) < self.settings.concurrency and not self.stopping:
            job = await self.db.write_lossy(
                jobs.claim,
                worker=self.worker_id,
                lease_s=self.queue.lease_s,
                running_cap=self.queue.running_cap,
                now=self.clock.time(),
                serves=None if self.registration is None else self.serves(),
                job_id=only,
                peek=peek and started == 0,
            )
            if job is None:
                break
            task = asyncio.create_task(self._run_job(job), name=f"job:{job.id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            started += 1
        return started

    async def drain(self) -> None:
        """Run until no job is queued or running here (tests and `likeness generate`)."""
        while await self.claim_available() or self._tasks:
            if self._tasks:
                await asyncio.wait(set(self._tasks), return_when=asyncio.FIRST_COMPLETED)

    async def wind_down(self, drain_s: float) -> None:
        """Claim nothing more, give running jobs ``drain_s`` to finish, then hand the rest back to the queue:
        queued again at once, uncharged, a provider's request kept for the next worker to resume."""
        self.stopping = True
        if self.registration is not None:
            self.registration.draining = True
            await self.registration.beat()  # front ends stop routing here at their next read
        if self._tasks:
            log.info("draining %d running jobs for up to %.0fs", len(self._tasks), drain_s)
            grace = asyncio.ensure_future(self.clock.sleep(drain_s))
            while self._tasks and not grace.done():
                await asyncio.wait({grace, *self._tasks}, return_when=asyncio.FIRST_COMPLETED)
            grace.cancel()
        left = list(self._running.values())
        await self.abandon()
        for attempt in left:
            try:
                released = await self.db.write(
                    jobs.release, job_id=attempt.job.id, attempt=attempt.job.attempt, now=self.clock.time()
                )
            except Exception:  # its lease runs out instead and another worker takes it then
                log.exception("could not hand the job back to the queue", extra={"job_id": attempt.job.id})
                continue
            if released:
                log.info("job handed back to the queue unfinished", extra={"job_id": attempt.job.id})

    async def abandon(self) -> None:
        """Stop without touching in-flight jobs: their leases expire and another process resumes them."""
        self.stopping = True
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks))

    # --- one job ------------------------------------------------------------------------------------

    async def _run_job(self, job: Job) -> None:
        attempt = Attempt(job)
        self._running[job.id] = attempt
        try:
            await self._run_attempt(attempt)
        finally:
            self._running.pop(job.id, None)

    async def _run_attempt(self, attempt: Attempt) -> None:
        job = attempt.job
        log.info("job started attempt=%d", job.attempt, extra={"job_id": job.id})
        self.hub.publish(JobProgress(job.id, ProgressKind.STARTED))
        # A job that waited in the queue past its deadline is not worth paying a provider for any more.
        attempt.deadline_hit = job.deadline_at is not None and self.clock.time() >= job.deadline_at
        work = asyncio.create_task(self._render(attempt) if not attempt.deadline_hit else _nothing())
        beat = asyncio.create_task(self._heartbeat(attempt, work))
        try:
            await asyncio.wait({work})
        except asyncio.CancelledError:  # this process is stopping: leave the job to its lease
            work.cancel()
            with contextlib.suppress(BaseException):
                await work
            raise
        finally:
            beat.cancel()
        error = None if work.cancelled() else work.exception()
        settlement = settle(
            result=work.result() if not work.cancelled() and error is None else None,
            error=error,
            cancel_requested=attempt.cancel_requested,
            lost=attempt.lost,
            deadline_hit=attempt.deadline_hit,
        )
        try:
            ended = await record(settlement, job, db=self.db, blobs=self.blobs, clock=self.clock, metrics=self.metrics)
        except Exception:
            log.exception("could not record the job's outcome", extra={"job_id": job.id})
            ended = True
        if ended:
            self.hub.publish(JobProgress(job.id, ProgressKind.FINISHED, job.backend))

    async def _heartbeat(self, attempt: Attempt, work: asyncio.Task[GenerationResult | None]) -> None:
        job = attempt.job
        while not work.done():
            await self.clock.sleep(self.queue.heartbeat_s)
            try:
                beat = await self.db.write_lossy(
                    jobs.heartbeat,
                    job_id=job.id,
                    attempt=job.attempt,
                    lease_s=self.queue.lease_s,
                    now=self.clock.time(),
                )
            except Exception:
                log.exception("heartbeat failed", extra={"job_id": job.id})
                continue
            if beat is None:
                attempt.lost = True
            elif beat.cancel_requested:
                attempt.cancel_requested = True
            elif beat.deadline_at is not None and self.clock.time() >= beat.deadline_at:
                attempt.deadline_hit = True
            else:
                continue
            work.cancel()
            return

    async def _render(self, attempt: Attempt) -> GenerationResult:
        if self.judging is None:
            return await self._renderer.render(attempt)
        return await self.judging.render(self._renderer, attempt)


async def _nothing() -> None:
    return None
