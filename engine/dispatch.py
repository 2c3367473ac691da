"""The dispatcher: claims jobs from the ledger and runs them on backends, with retries and failover.

Per job: heartbeat the lease (which also carries cancel requests), pick backends along the route,
retry transient failures with exponential backoff and jitter (honouring Retry-After), open a backend's
circuit when it keeps failing or its account is empty, fail over to the next eligible backend, store
the outputs in the blob store and finish the job in the ledger — charging on success, refunding on
failure or cancel. A provider's request id is stored before waiting on it, so a restarted dispatcher
resumes polling instead of paying twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from engine.backend import Backend, GenerationResult, OutputImage, ProviderRef, Stage
from engine.errors import BackendError, FailureKind, TransientError
from engine.events import JobProgress, ProgressHub, ProgressKind
from engine.request import GenerationRequest
from engine.routing import CircuitBreaker, Router
from engine.settings import DispatchSettings
from storage import jobs
from storage.blobs import BlobStore
from storage.db import Database
from storage.models import Job
from storage.settings import QueueSettings

log = logging.getLogger(__name__)

# Failures that are about the request itself: another backend would refuse it too.
USER_FAILURES = frozenset({FailureKind.CONTENT_POLICY, FailureKind.INVALID_INPUT, FailureKind.NO_FACE})
# Failures that say the backend, not the job, is broken: its circuit opens at once.
BACKEND_DOWN = frozenset({FailureKind.OUT_OF_CREDIT, FailureKind.AUTH})


class JobMetrics(Protocol):
    """Where the dispatcher reports outcomes for the operator's metrics."""

    def job_finished(self, backend: str, state: str, seconds: float) -> None: ...
    def spend(self, backend: str, usd: float) -> None: ...
    def provider_error(self, backend: str, kind: str) -> None: ...
    def breaker_state(self, backend: str, state: str) -> None: ...


class TokenBucket:
    """Submits per minute for one backend; ``take`` waits for a token."""

    def __init__(self, per_minute: float, clock: Callable[[], float], sleep: Callable[[float], Awaitable[None]]):
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, per_minute / 60.0)
        self.tokens = self.capacity
        self.clock, self.sleep = clock, sleep
        self.updated = clock()

    async def take(self) -> None:
        while True:
            now = self.clock()
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
            if self.tokens >= 1:
                self.tokens -= 1
                return
            await self.sleep((1 - self.tokens) / self.rate)


@dataclass
class _Run:
    """One attempt at one job in this process."""

    job: Job
    cancel_requested: bool = False
    lost: bool = False
    deadline_hit: bool = False


class _JobProgress:
    """The Progress a backend sees: persists its request id and publishes what it reports."""

    def __init__(self, dispatcher: Dispatcher, run: _Run, backend: str) -> None:
        self._dispatcher = dispatcher
        self._run = run
        self._backend = backend
        ref = run.job.provider_ref
        self._resume = ProviderRef.from_json(ref) if ref and ref.get("backend") == backend else None

    @property
    def resume(self) -> ProviderRef | None:
        return self._resume

    @property
    def abandoned(self) -> bool:
        return self._dispatcher.stopping or self._run.lost

    async def submitted(self, ref: ProviderRef) -> None:
        job = self._run.job
        stored = await self._dispatcher.db.write(
            jobs.set_provider_ref,
            job_id=job.id,
            attempt=job.attempt,
            ref=ref.to_json(),
            now=self._dispatcher.clock(),
        )
        if not stored:
            log.warning("request %s stored after the job moved on", ref.request_id, extra={"job_id": job.id})

    async def update(self, stage: Stage, *, queue_position: int | None = None, fraction: float | None = None) -> None:
        kind = ProgressKind.PROVIDER_QUEUE if stage is Stage.QUEUED else ProgressKind.RENDERING
        self._dispatcher.hub.publish(JobProgress(self._run.job.id, kind, self._backend, queue_position, fraction))


class Dispatcher:
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
        metrics: JobMetrics | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.db, self.blobs, self.router = db, blobs, router
        self.settings, self.queue, self.hub = settings, queue, hub
        self.worker_id = worker_id
        self.metrics = metrics
        self.clock, self.sleep, self.jitter = clock, sleep, jitter
        self.stopping = False
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._backend_slots = {
            name: asyncio.Semaphore(settings.backend_concurrency.get(name, settings.default_backend_concurrency))
            for name in router.backends
        }
        self._buckets = {
            name: TokenBucket(rate, clock, sleep) for name, rate in settings.rate_per_minute.items() if rate > 0
        }

    @staticmethod
    def breakers_for(names: list[str], settings: DispatchSettings) -> dict[str, CircuitBreaker]:
        return {name: CircuitBreaker(settings.breaker_threshold, settings.breaker_cooldown_s) for name in names}

    def notify(self) -> None:
        """A job was submitted in this process: look for work now instead of at the next poll."""
        self._wake.set()

    # --- the claim loop -----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Claim and run jobs until ``stop`` is set; then drop in-flight jobs for their leases to expire."""
        last_sweep = 0.0
        stopper = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                now = self.clock()
                if now - last_sweep >= self.queue.lease_s / 2:
                    last_sweep = now
                    await self._sweep(now)
                try:
                    await self.claim_available()
                except Exception:  # the database may be briefly unreachable: try again at the next poll
                    log.exception("claiming jobs failed")
                self._wake.clear()
                waits: set[asyncio.Future[Any]] = {stopper, asyncio.ensure_future(self._wake.wait())}
                waits |= self._tasks
                _done, pending = await asyncio.wait(
                    waits, timeout=self.settings.poll_s, return_when=asyncio.FIRST_COMPLETED
                )
                for future in pending:
                    if future is not stopper and future not in self._tasks:
                        future.cancel()
        finally:
            stopper.cancel()
            await self.abandon()

    async def _sweep(self, now: float) -> None:
        try:
            expired = await self.db.write(jobs.expire_leases, now=now)
        except Exception:
            log.exception("lease sweep failed")
            return
        for job_id in expired:
            log.info("lease expired; job back in the queue or ended", extra={"job_id": job_id})

    async def claim_available(self) -> int:
        """Claim jobs while this process has free slots; returns how many it started."""
        started = 0
        while len(self._tasks) < self.settings.concurrency and not self.stopping:
            job = await self.db.write_lossy(
                jobs.claim,
                worker=self.worker_id,
                lease_s=self.queue.lease_s,
                running_cap=self.queue.running_cap,
                now=self.clock(),
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

    async def abandon(self) -> None:
        """Stop without touching in-flight jobs: their leases expire and another process resumes them."""
        self.stopping = True
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks))

    # --- one job ------------------------------------------------------------------------------------

    async def _run_job(self, job: Job) -> None:
        run = _Run(job)
        log.info("job started attempt=%d", job.attempt, extra={"job_id": job.id})
        self.hub.publish(JobProgress(job.id, ProgressKind.STARTED))
        # A job that waited in the queue past its deadline is not worth paying a provider for any more.
        run.deadline_hit = job.deadline_at is not None and self.clock() >= job.deadline_at
        work = asyncio.create_task(self._render(run) if not run.deadline_hit else _nothing())
        beat = asyncio.create_task(self._heartbeat(run, work))
        try:
            await asyncio.wait({work})
        except asyncio.CancelledError:  # this process is stopping: leave the job to its lease
            work.cancel()
            with contextlib.suppress(BaseException):
                await work
            raise
        finally:
            beat.cancel()
        if run.lost:
            log.warning("lease lost; another worker owns the job now", extra={"job_id": job.id})
            return
        try:
            ended = await self._finish(run, work)
        except Exception:
            log.exception("could not record the job's outcome", extra={"job_id": job.id})
            ended = True
        if ended:
            self.hub.publish(JobProgress(job.id, ProgressKind.FINISHED, job.backend))

    async def _heartbeat(self, run: _Run, work: asyncio.Task[GenerationResult | None]) -> None:
        job = run.job
        while not work.done():
            await asyncio.sleep(self.queue.heartbeat_s)  # leases are wall-clock time, whatever ``sleep`` is
            try:
                beat = await self.db.write_lossy(
                    jobs.heartbeat,
                    job_id=job.id,
                    attempt=job.attempt,
                    lease_s=self.queue.lease_s,
                    now=self.clock(),
                )
            except Exception:
                log.exception("heartbeat failed", extra={"job_id": job.id})
                continue
            if beat is None:
                run.lost = True
            elif beat.cancel_requested:
                run.cancel_requested = True
            elif beat.deadline_at is not None and self.clock() >= beat.deadline_at:
                run.deadline_hit = True
            else:
                continue
            work.cancel()
            return

    async def _render(self, run: _Run) -> GenerationResult | None:
        """Try the route's backends in order. Raises the last classified failure if all fail."""
        job = run.job
        faces = tuple([await self.blobs.get(key) for key in job.face_keys])
        request = GenerationRequest.from_params(job.params, faces)
        route = list(job.route) or self.router.route
        if job.pinned:
            route = route[:1]
        # A request an earlier attempt already submitted is resumed on its backend before anything else.
        resume_backend = (job.provider_ref or {}).get("backend")
        if resume_backend in route:
            route.remove(resume_backend)
            route.insert(0, resume_backend)
        candidates = self.router.candidates(request, route)
        if not candidates:
            raise _NoBackend()
        last: BackendError | None = None
        for backend in candidates:
            try:
                return await self._on_backend(run, backend, request)
            except BackendError as exc:
                last = exc
                if exc.kind in USER_FAILURES or exc.kind is FailureKind.UNKNOWN_OUTCOME:
                    raise
                log.warning("backend %s failed (%s); failing over", backend.name, exc.kind, extra={"job_id": job.id})
        assert last is not None
        raise last

    async def _on_backend(self, run: _Run, backend: Backend, request: GenerationRequest) -> GenerationResult:
        job = run.job
        if job.backend != backend.name:
            # A switch is recorded (and the old backend's request forgotten) at once; a first backend is
            # recorded with its request id, or by the job's completion, saving a write per job.
            if job.backend is not None:
                await self.db.write(
                    jobs.set_backend, job_id=job.id, attempt=job.attempt, backend=backend.name, now=self.clock()
                )
            if job.provider_ref and job.provider_ref.get("backend") != backend.name:
                job.provider_ref = None
            job.backend = backend.name
        self.hub.publish(JobProgress(job.id, ProgressKind.BACKEND, backend.name))
        if len(request.faces) > backend.capabilities.max_faces:
            request = request.with_faces(request.faces[: backend.capabilities.max_faces])
        breaker = self.router.breakers.get(backend.name)
        tries = 0
        while True:
            tries += 1
            progress = _JobProgress(self, run, backend.name)
            try:
                async with self._backend_slots[backend.name]:
                    bucket = self._buckets.get(backend.name)
                    if bucket is not None and progress.resume is None:
                        await bucket.take()
                    if breaker is not None:
                        breaker.begin()
                    result = await backend.generate(request, progress)
            except BackendError as exc:
                self._count_error(backend.name, exc.kind)
                if exc.kind in BACKEND_DOWN and breaker is not None:
                    breaker.open(self.settings.out_of_credit_cooldown_s)
                    log.error(
                        "%s is unusable (%s): circuit opened",
                        backend.name,
                        exc.kind,
                        extra={"job_id": job.id},
                    )
                    self._breaker_metric(backend.name, breaker)
                    raise
                if exc.kind in USER_FAILURES or exc.kind is FailureKind.UNKNOWN_OUTCOME:
                    raise
                if breaker is not None:
                    breaker.failure()
                    self._breaker_metric(backend.name, breaker)
                if not isinstance(exc, TransientError) or tries >= self.settings.tries_per_backend:
                    raise
                if breaker is not None and not breaker.allows():
                    raise
                delay = self._backoff(tries, exc.retry_after)
                if delay > self.settings.requeue_after_s and job.attempt < job.max_attempts:
                    # Too long to hold a slot and a lease for: back to the queue, due after the wait.
                    raise _RetryLater(delay, exc.kind) from exc
                log.info("transient failure on %s, retry in %.1fs", backend.name, delay, extra={"job_id": job.id})
                await self.sleep(delay)
                # The provider never accepted the submit, so the next try starts a new request.
                continue
            if breaker is not None:
                breaker.success()
                self._breaker_metric(backend.name, breaker)
            return result

    def _backoff(self, tries: int, retry_after: float | None) -> float:
        exponential = min(self.settings.backoff_cap_s, self.settings.backoff_base_s * 2.0 ** (tries - 1))
        delay = exponential * (0.5 + self.jitter() / 2)  # "equal jitter": never less than half the step
        return max(delay, retry_after or 0.0)

    async def _finish(self, run: _Run, work: asyncio.Task[GenerationResult | None]) -> bool:
        """Record the attempt's outcome; False when the job went back to the queue."""
        job = run.job
        now = self.clock()
        backend = job.backend or "none"
        if run.cancel_requested:
            await self.db.write(jobs.finish_cancelled, job_id=job.id, attempt=job.attempt, now=now)
            log.info("job cancelled", extra={"job_id": job.id})
            self._finished(backend, "cancelled", job)
            return True
        if run.deadline_hit:
            await self.db.write(jobs.fail, job_id=job.id, attempt=job.attempt, reason="deadline", now=now)
            log.warning("job passed its deadline", extra={"job_id": job.id})
            self._finished(backend, "failed", job)
            return True
        error = work.exception()
        if isinstance(error, _RetryLater):
            requeued = await self.db.write(
                jobs.retry_later,
                job_id=job.id,
                attempt=job.attempt,
                run_after=now + error.delay,
                reason=str(error.kind),
                now=now,
            )
            if requeued:
                log.info("back in the queue for %.0fs (%s)", error.delay, error.kind, extra={"job_id": job.id})
                return False
            await self.db.write(jobs.finish_cancelled, job_id=job.id, attempt=job.attempt, now=now)
            return True  # a cancel arrived meanwhile
        if error is None:
            result = work.result()
            assert result is not None
            images = [await self._store(index, image) for index, image in enumerate(result.images)]
            done = await self.db.write(
                jobs.complete,
                job_id=job.id,
                attempt=job.attempt,
                images=images,
                backend=job.backend,
                seed=result.seed,
                spend_usd=result.spend_usd,
                now=self.clock(),
            )
            if done:
                log.info("job succeeded on %s images=%d", backend, len(images), extra={"job_id": job.id})
                self._finished(backend, "succeeded", job, result.spend_usd)
            return True
        reason, detail = _failure(error)
        if reason == FailureKind.UNKNOWN_OUTCOME:
            log.error(
                "submit to %s may have been billed without an answer; not re-sent",
                backend,
                extra={"job_id": job.id},
            )
        elif reason == "internal":
            log.error("job crashed", exc_info=error, extra={"job_id": job.id})
        else:
            log.warning("job failed: %s (%s)", reason, detail, extra={"job_id": job.id})
        await self.db.write(
            jobs.fail, job_id=job.id, attempt=job.attempt, reason=reason, detail=detail, now=self.clock()
        )
        self._finished(backend, "failed", job)
        return True

    async def _store(self, index: int, image: OutputImage) -> jobs.NewImage:
        key = await self.blobs.put(image.data)
        return jobs.NewImage(
            index=index,
            blob_key=key,
            sha256=key,
            content_type=image.content_type,
            size_bytes=len(image.data),
            width=image.width,
            height=image.height,
            nsfw=image.nsfw,
        )

    # --- metrics ------------------------------------------------------------------------------------

    def _finished(self, backend: str, state: str, job: Job, spend: float = 0.0) -> None:
        if self.metrics is not None:
            started = job.started_at or job.created_at
            self.metrics.job_finished(backend, state, max(0.0, self.clock() - started))
            if spend:
                self.metrics.spend(backend, spend)

    def _count_error(self, backend: str, kind: FailureKind) -> None:
        if self.metrics is not None:
            self.metrics.provider_error(backend, kind)

    def _breaker_metric(self, backend: str, breaker: CircuitBreaker) -> None:
        if self.metrics is not None:
            self.metrics.breaker_state(backend, breaker.state)


async def _nothing() -> None:
    return None


class _RetryLater(Exception):
    """A transient failure whose wait is long: the job goes back to the queue instead of waiting here."""

    def __init__(self, delay: float, kind: FailureKind) -> None:
        super().__init__(kind)
        self.delay, self.kind = delay, kind


class _NoBackend(Exception):
    """No backend of the route can serve the job now."""


def _failure(error: BaseException) -> tuple[str, str]:
    if isinstance(error, BackendError):
        return str(error.kind), error.detail[:1024]
    if isinstance(error, _NoBackend):
        return "no_backend", "no backend of the route can serve this job now"
    if isinstance(error, KeyError):
        return "photo_missing", "a face photo of this job is no longer stored"
    return "internal", type(error).__name__
