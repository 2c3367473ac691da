"""How one attempt ends in the ledger: its outcome mapped to one transition, then recorded."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum

from engine.backend import GenerationResult, OutputImage
from engine.clock import Clock
from engine.errors import BackendError, FailureKind, PhotoMissingError, UnsafeOutputError
from engine.metrics import JobMetrics
from storage import jobs
from storage.blobs import BlobStore
from storage.db import Database
from storage.models import Job
from storage.states import JobState

log = logging.getLogger(__name__)


class RetryLater(Exception):
    """A transient failure whose wait is long: the job goes back to the queue instead of waiting here."""

    def __init__(self, delay_s: float, kind: FailureKind) -> None:
        super().__init__(kind)
        self.delay_s, self.kind = delay_s, kind


class NoBackendError(Exception):
    """No backend of the route can serve the job now."""


class Record(StrEnum):
    """The ledger transition that ends an attempt."""

    NOTHING = "nothing"  # the lease was lost: the job belongs to another worker now
    COMPLETE = "complete"  # succeeded: outputs stored, the reservation charged
    FAIL = "fail"  # failed with ``reason``: refunded
    CANCEL = "cancel"  # cancelled on the user's request: refunded
    RETRY_LATER = "retry_later"  # back in the queue, due after ``delay_s``; still reserved


@dataclass(frozen=True)
class Settlement:
    record: Record
    reason: str | None = None  # the job's error code (FailureKind values, "deadline", "no_backend", ...)
    detail: str = ""  # for the operator, never shown to users
    delay_s: float = 0.0
    result: GenerationResult | None = None
    crash: BaseException | None = None  # an unexpected error, logged with its traceback
    spend_usd: float = 0.0  # provider money a failed attempt still cost (renders whose outputs were blocked)


def settle(
    *,
    result: GenerationResult | None = None,
    error: BaseException | None = None,
    cancel_requested: bool = False,
    lost: bool = False,
    deadline_hit: bool = False,
) -> Settlement:
    """The one mapping from what happened to an attempt to how the ledger records it.

    The flags come from the heartbeat and win over the render's own result, in this order: a lost lease
    (someone else owns the job), a requested cancel, the deadline.
    """
    if lost:
        return Settlement(Record.NOTHING)
    if cancel_requested:
        return Settlement(Record.CANCEL, "cancelled")
    if deadline_hit:
        return Settlement(Record.FAIL, "deadline")
    if isinstance(error, RetryLater):
        return Settlement(Record.RETRY_LATER, str(error.kind), delay_s=error.delay_s)
    if error is None:
        if result is None:
            return Settlement(Record.FAIL, "internal", "the render ended without a result")
        return Settlement(Record.COMPLETE, result=result)
    if isinstance(error, UnsafeOutputError):
        return Settlement(Record.FAIL, str(error.kind), error.detail[:1024], spend_usd=error.spend_usd)
    if isinstance(error, BackendError):
        return Settlement(Record.FAIL, str(error.kind), error.detail[:1024])
    if isinstance(error, NoBackendError):
        return Settlement(Record.FAIL, "no_backend", "no backend of the route can serve this job now")
    if isinstance(error, PhotoMissingError):
        return Settlement(Record.FAIL, "photo_missing", "a face photo of this job is no longer stored")
    return Settlement(Record.FAIL, "internal", type(error).__name__, crash=error)


async def record(
    settlement: Settlement, job: Job, *, db: Database, blobs: BlobStore, clock: Clock, metrics: JobMetrics
) -> bool:
    """Make the settlement's ledger call for this attempt; True when the job reached a final state."""
    backend = job.backend or "none"
    now = clock.time()
    match settlement.record:
        case Record.NOTHING:
            log.warning("lease lost; another worker owns the job now", extra={"job_id": job.id})
            return False
        case Record.CANCEL:
            await db.write(jobs.finish_cancelled, job_id=job.id, attempt=job.attempt, now=now)
            log.info("job cancelled", extra={"job_id": job.id})
            _finished(metrics, clock, backend, "cancelled", job)
            return True
        case Record.RETRY_LATER:
            requeued = await db.write(
                jobs.retry_later,
                job_id=job.id,
                attempt=job.attempt,
                run_after=now + settlement.delay_s,
                reason=settlement.reason or "",
                now=now,
            )
            if requeued:
                log.info(
                    "back in the queue for %.0fs (%s)", settlement.delay_s, settlement.reason, extra={"job_id": job.id}
                )
                return False
            await db.write(jobs.finish_cancelled, job_id=job.id, attempt=job.attempt, now=now)
            return True  # a cancel arrived meanwhile
        case Record.COMPLETE:
            result = settlement.result
            assert result is not None
            images = [await _store(blobs, index, image) for index, image in enumerate(result.images)]
            done = await db.write(
                jobs.complete,
                job_id=job.id,
                attempt=job.attempt,
                images=images,
                backend=job.backend,
                seed=result.seed,
                spend_usd=result.spend_usd,
                now=clock.time(),
            )
            if done == JobState.CANCELLED:  # the user's cancel arrived before the result: refunded
                log.info("job cancelled as its render finished", extra={"job_id": job.id})
                _finished(metrics, clock, backend, "cancelled", job, result.spend_usd)
            elif done:
                log.info("job succeeded on %s images=%d", backend, len(images), extra={"job_id": job.id})
                _finished(metrics, clock, backend, "succeeded", job, result.spend_usd)
            return True
        case Record.FAIL:
            reason = settlement.reason or "internal"
            if reason == "deadline":
                log.warning("job passed its deadline", extra={"job_id": job.id})
            elif reason == FailureKind.UNKNOWN_OUTCOME:
                log.error(
                    "submit to %s may have been billed without an answer; not re-sent",
                    backend,
                    extra={"job_id": job.id},
                )
            elif settlement.crash is not None:
                log.error("job crashed", exc_info=settlement.crash, extra={"job_id": job.id})
            else:
                log.warning("job failed: %s (%s)", reason, settlement.detail, extra={"job_id": job.id})
            await db.write(
                jobs.fail,
                job_id=job.id,
                attempt=job.attempt,
                reason=reason,
                detail=settlement.detail,
                now=now,
                spend_usd=settlement.spend_usd,
            )
            _finished(metrics, clock, backend, "failed", job, settlement.spend_usd)
            return True


async def _store(blobs: BlobStore, index: int, image: OutputImage) -> jobs.NewImage:
    key = await blobs.put(image.data)
    return jobs.NewImage(
        index=index,
        blob_key=key,
        sha256=key,
        content_type=image.content_type,
        size_bytes=len(image.data),
        width=image.width,
        height=image.height,
        nsfw=image.nsfw,
        likeness=image.likeness,
        judge=image.judge,
    )


def _finished(metrics: JobMetrics, clock: Clock, backend: str, state: str, job: Job, spend: float = 0.0) -> None:
    started = job.started_at or job.created_at
    metrics.job_finished(backend, state, max(0.0, clock.time() - started))
    if spend:
        metrics.spend(backend, spend)
