"""One attempt at one job: walk the route, try each backend through its gate, fail over, report progress."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from engine.backend import Backend, GenerationResult, ProviderRef, Stage
from engine.budget import OverBudgetError
from engine.clock import Clock
from engine.errors import BackendError, FailureKind, PhotoMissingError, UnknownOutcomeError
from engine.events import JobProgress, ProgressHub, ProgressKind
from engine.gate import BackendGate, Step
from engine.outcome import NoBackendError, RetryLater
from engine.request import GenerationRequest
from engine.routing import Router
from storage import jobs
from storage.blobs import BlobStore
from storage.db import Database
from storage.models import Job

log = logging.getLogger(__name__)

SUBMITTING = "submitting"  # in a job's provider_ref: the attempt that is sending a submit to the backend named


@dataclass
class Attempt:
    """One claim of a job in this process; the heartbeat sets the flags, the render reads them."""

    job: Job
    cancel_requested: bool = False
    lost: bool = False
    deadline_hit: bool = False


def holder(job: Job) -> str | None:
    """The backend whose provider holds, or may hold, the job's request: its id is stored, or a submit to it
    was sent and no answer stored."""
    ref = job.provider_ref or {}
    return str(ref["backend"]) if "request_id" in ref or SUBMITTING in ref else None


def accepted_ref(job: Job, backend: str) -> ProviderRef | None:
    """The request ``backend`` accepted for the job, if its id is stored (not just a submit being sent)."""
    ref = job.provider_ref
    if not ref or ref.get("backend") != backend or "request_id" not in ref:
        return None
    return ProviderRef.from_json(ref)


class AttemptProgress:
    """The Progress a backend sees for one try: remembers its request id and publishes what it reports.

    Before a submit is sent, the job's ``provider_ref`` holds a marker naming the backend and the attempt
    (``SUBMITTING``) until the request id replaces it. An attempt that finds an earlier attempt's marker knows
    that attempt died between sending and storing the answer: the provider may hold (and bill) that request,
    which nothing can find again, so the job is not sent a second time. A marker of this same attempt is a
    submit the provider refused (an unknown outcome ends the attempt), which may be sent again.
    """

    def __init__(self, renderer: Renderer, attempt: Attempt, backend: str) -> None:
        self._renderer = renderer
        self._attempt = attempt
        self._backend = backend
        self._resume = accepted_ref(attempt.job, backend)

    @property
    def resume(self) -> ProviderRef | None:
        return self._resume

    @property
    def abandoned(self) -> bool:
        return self._renderer.stopping() or self._attempt.lost

    async def submitting(self) -> None:
        job = self._attempt.job
        ref = job.provider_ref or {}
        if ref.get("backend") == self._backend and ref.get(SUBMITTING, job.attempt) != job.attempt:
            raise UnknownOutcomeError(
                f"{self._backend}: attempt {ref[SUBMITTING]} sent a submit and stopped before storing its answer; "
                "the provider may have accepted and billed it, so it is not sent again"
            )
        marker = {"backend": self._backend, SUBMITTING: job.attempt}
        job.provider_ref = marker
        await self._renderer.db.write(
            jobs.set_provider_ref, job_id=job.id, attempt=job.attempt, ref=marker, now=self._renderer.clock.time()
        )

    async def submitted(self, ref: ProviderRef) -> None:
        job = self._attempt.job
        # In memory first: a later try of this attempt on this backend (after a transient error while
        # polling or fetching) must resume this request, not pay for a second one, even if the write fails.
        job.provider_ref = ref.to_json()
        stored = await self._renderer.db.write(
            jobs.set_provider_ref,
            job_id=job.id,
            attempt=job.attempt,
            ref=ref.to_json(),
            now=self._renderer.clock.time(),
        )
        if not stored:
            log.warning("request %s stored after the job moved on", ref.request_id, extra={"job_id": job.id})

    async def update(self, stage: Stage, *, queue_position: int | None = None, fraction: float | None = None) -> None:
        kind = ProgressKind.PROVIDER_QUEUE if stage is Stage.QUEUED else ProgressKind.RENDERING
        self._renderer.hub.publish(JobProgress(self._attempt.job.id, kind, self._backend, queue_position, fraction))


class Renderer:
    """Runs an attempt's render: the route's backends in order, each try admitted and judged by the
    backend's gate. Raises what ``engine.outcome.settle`` maps to the ledger."""

    def __init__(
        self,
        db: Database,
        blobs: BlobStore,
        router: Router,
        gates: dict[str, BackendGate],
        *,
        hub: ProgressHub,
        clock: Clock,
        stopping: Callable[[], bool],
    ) -> None:
        self.db, self.blobs, self.router, self.gates = db, blobs, router, gates
        self.hub, self.clock, self.stopping = hub, clock, stopping

    async def render(
        self, attempt: Attempt, *, request: GenerationRequest | None = None, prefer: str | None = None
    ) -> GenerationResult:
        """Try the route's backends in order. Raises the last classified failure if all fail.

        ``request`` replaces the job's own (a re-render with another seed); ``prefer`` is tried first when the
        route has it (a re-render stays on the backend that rendered the first time).
        """
        job = attempt.job
        if request is None:
            request = GenerationRequest.from_params(job.params, await self._faces(job))
        route = list(job.route) or self.router.route
        if job.pinned:
            route = route[:1]
        if prefer in route:
            route.remove(prefer)
            route.insert(0, prefer)
        held = holder(job)
        if held is not None and held in self.router.backends:
            # A provider holds (or may hold) this job's request: it is resumed there or the job ends, whatever
            # that backend's circuit says (resuming sends no submit). Another backend would render and bill the
            # job a second time; only that provider ending the request itself lets the job move on.
            others = self.router.candidates(request, [name for name in route if name != held])
            candidates = [self.router.backends[held], *others]
        else:
            candidates = self.router.candidates(request, route)
        if not candidates:
            raise NoBackendError()
        last: BackendError | None = None
        try:
            for backend in candidates:
                try:
                    return await self._on_backend(attempt, backend, request)
                except _GiveUp as given_up:
                    last = given_up.error
                    if given_up.step is Step.STOP:
                        raise last from None
                    log.warning(
                        "backend %s failed (%s); failing over", backend.name, last.kind, extra={"job_id": job.id}
                    )
        finally:
            if self.router.budget is not None:
                self.router.budget.forget(job.id)
        assert last is not None
        raise last

    def _time_left(self, job: Job) -> float | None:
        return None if job.deadline_at is None else job.deadline_at - self.clock.time()

    async def _faces(self, job: Job) -> tuple[bytes, ...]:
        faces: list[bytes] = []
        for key in job.face_keys:
            try:
                faces.append(await self.blobs.get(key))
            except KeyError:
                raise PhotoMissingError(key) from None
        return tuple(faces)

    async def _on_backend(self, attempt: Attempt, backend: Backend, request: GenerationRequest) -> GenerationResult:
        job = attempt.job
        budget = self.router.budget
        # A request the provider already has is paid for: it resumes whatever the budget says now.
        resuming = holder(job) == backend.name
        if budget is not None and not resuming and not await budget.hold(job.id, backend.name, request):
            raise _GiveUp(Step.FAIL_OVER, OverBudgetError(f"{backend.name} is over its daily budget"))
        if job.backend != backend.name:
            # A switch is recorded (and the old backend's request forgotten) at once; a first backend is
            # recorded with its submit, or by the job's completion, saving a write per job.
            if job.backend is not None:
                await self.db.write(
                    jobs.set_backend, job_id=job.id, attempt=job.attempt, backend=backend.name, now=self.clock.time()
                )
            if job.provider_ref and job.provider_ref.get("backend") != backend.name:
                job.provider_ref = None
            job.backend = backend.name
        self.hub.publish(JobProgress(job.id, ProgressKind.BACKEND, backend.name))
        if len(request.faces) > backend.capabilities.max_faces:
            request = request.with_faces(request.faces[: backend.capabilities.max_faces])
        gate = self.gates[backend.name]
        tries = 0
        while True:
            tries += 1
            time_left = self._time_left(job)
            if time_left is not None and time_left <= 0:
                # Past the deadline (the heartbeat would say so at its next beat): no new try, no new bill.
                attempt.deadline_hit = True
                raise _DeadlinePassed()
            progress = AttemptProgress(self, attempt, backend.name)
            try:
                async with gate.admit(resuming=progress.resume is not None):
                    result = await backend.generate(request, progress)
            except BackendError as exc:
                if accepted_ref(job, backend.name) is None and exc.kind is not FailureKind.UNKNOWN_OUTCOME:
                    await self._refused(job, backend.name)
                verdict = gate.failed(
                    exc,
                    tries=tries,
                    can_requeue=job.attempt < job.max_attempts,
                    time_left_s=self._time_left(job),
                    accepted=holder(job) == backend.name,
                )
                if verdict.circuit_opened:
                    log.error("%s is unusable (%s): circuit opened", backend.name, exc.kind, extra={"job_id": job.id})
                if verdict.step is Step.REQUEUE:
                    raise RetryLater(verdict.delay_s, exc.kind) from exc
                if verdict.step is not Step.RETRY:
                    raise _GiveUp(verdict.step, exc) from exc
                log.info(
                    "transient failure on %s, retry in %.1fs", backend.name, verdict.delay_s, extra={"job_id": job.id}
                )
                # A request the provider accepted is resumed by the next try (``submitted`` kept its id);
                # otherwise the next try submits anew.
                await self.clock.sleep(verdict.delay_s)
                continue
            gate.succeeded()
            if budget is not None:
                budget.settled(job.id, backend.name, len(result.images), result.spend_usd)
            return result

    async def _refused(self, job: Job, backend: str) -> None:
        """The provider answered this attempt's submit with a refusal: it holds no request, so the marker of a
        submit in flight goes (a later attempt may send one again)."""
        if (job.provider_ref or {}).get(SUBMITTING) == job.attempt:
            job.provider_ref = {"backend": backend}
            await self.db.write(
                jobs.set_provider_ref, job_id=job.id, attempt=job.attempt, ref=job.provider_ref, now=self.clock.time()
            )


class _DeadlinePassed(Exception):
    """The job's deadline passed between tries: the attempt ends as a deadline failure."""


class _GiveUp(Exception):
    """This backend is done with the job: fail over to the next one, or stop the whole render."""

    def __init__(self, step: Step, error: BackendError) -> None:
        super().__init__(error)
        self.step, self.error = step, error
