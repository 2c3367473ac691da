"""The job ledger: submit, claim, heartbeat and the terminal transitions, as conditional updates.

Every function takes the open transaction as ``session`` (see ``Database.write``). A transition that
finds the row in another state changes nothing and reports so: the loser of a race never wins late.
Quota moves in the same transaction as the job: reserve on submit, commit on success, refund on failure
or cancel, each recorded once in the ledger (unique per job and kind).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy import and_, case, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from storage import tables as t
from storage.errors import DuplicateJob, QuotaRefused, RefusalReason
from storage.models import Job
from storage.quota import record_entry
from storage.states import TIER_WEIGHTS, DeliveryState, JobState, LedgerKind, Tier


def utc_day(now: float) -> str:
    return dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%d")


@dataclass(frozen=True)
class NewJob:
    id: str
    user_id: int
    params: dict[str, Any]
    cost: int
    face_keys: list[str] = field(default_factory=list)
    route: list[str] = field(default_factory=list)
    pinned: bool = False
    reply_target: dict[str, Any] = field(default_factory=dict)
    kind: str = "imagine"
    parent_id: str | None = None
    priority: int = 0
    max_attempts: int = 3
    deadline_s: float | None = None


@dataclass(frozen=True)
class NewImage:
    index: int
    blob_key: str
    sha256: str
    content_type: str
    size_bytes: int
    width: int
    height: int
    nsfw: bool = False


class CancelOutcome(StrEnum):
    CANCELLED = "cancelled"  # was queued: cancelled and refunded now
    REQUESTED = "requested"  # is running: the worker sees it at its next heartbeat
    NOOP = "noop"  # already finished, or unknown


@dataclass(frozen=True)
class Heartbeat:
    cancel_requested: bool
    deadline_at: float | None


def _insert(session: AsyncSession, table: Any) -> Any:
    dialect = session.bind.dialect.name
    return (pg_insert if dialect == "postgresql" else sqlite_insert)(table)


def _is_postgres(session: AsyncSession) -> bool:
    return bool(session.bind.dialect.name == "postgresql")


async def submit(*, session: AsyncSession, job: NewJob, now: float, daily_jobs_default: int) -> Job:
    """Queue a job and reserve its cost. Raises DuplicateJob or QuotaRefused, writing nothing."""
    if (await session.execute(select(t.jobs.c.id).where(t.jobs.c.id == job.id))).first():
        raise DuplicateJob(job.id)
    user = (
        await session.execute(
            select(t.users.c.tier, t.users.c.unlimited).where(t.users.c.id == job.user_id)
        )
    ).first()
    if user is None:
        raise QuotaRefused(RefusalReason.UNKNOWN_USER)
    weight = TIER_WEIGHTS.get(Tier(user.tier), 1.0)
    # Start-time fair queuing: jobs run in order of start tags. The virtual clock is the smallest start
    # tag still queued (or, with an empty queue, the largest finish tag handed out), so a heavy user's
    # backlog cannot push a newcomer behind it.
    vclock = (
        select(
            func.coalesce(
                select(func.min(t.jobs.c.fair_key)).where(t.jobs.c.state == JobState.QUEUED).scalar_subquery(),
                select(func.max(t.users.c.last_vfinish)).scalar_subquery(),
                0.0,
            )
        )
    ).scalar_subquery()
    today = utc_day(now)
    u = t.users.c
    daily_limit = func.coalesce(
        u.daily_jobs_limit,
        select(t.scope_settings.c.daily_jobs).where(t.scope_settings.c.scope == "global").scalar_subquery(),
        daily_jobs_default,
    )
    reserved = (
        await session.execute(
            update(t.users)
            .where(
                u.id == job.user_id,
                u.banned.is_(False),
                or_(u.unlimited.is_(True), u.credits - u.reserved >= job.cost),
                or_(u.unlimited.is_(True), u.day != today, u.day_jobs < daily_limit),
            )
            .values(
                reserved=u.reserved + job.cost,
                day_jobs=case((u.day == today, u.day_jobs + 1), else_=1),
                day=today,
                last_vfinish=case((u.last_vfinish > vclock, u.last_vfinish), else_=vclock)
                + job.cost / weight,
            )
            .returning(u.last_vfinish)
        )
    ).first()
    if reserved is None:
        raise await _refusal(session, job, today, daily_jobs_default)
    inserted = await session.execute(
        _insert(session, t.jobs)
        .values(
            id=job.id,
            user_id=job.user_id,
            kind=job.kind,
            parent_id=job.parent_id,
            state=JobState.QUEUED,
            params=job.params,
            face_keys=job.face_keys,
            route=job.route,
            pinned=job.pinned,
            attempt=0,
            max_attempts=job.max_attempts,
            priority=job.priority,
            fair_key=reserved.last_vfinish - job.cost / weight,  # the job's start tag
            run_after=now,
            deadline_at=None if job.deadline_s is None else now + job.deadline_s,
            cancel_requested=False,
            cost=job.cost,
            spend_usd=0.0,
            reply_target=job.reply_target,
            delivery_state=DeliveryState.NONE,
            delivery_attempts=0,
            expired=False,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=["id"])
    )
    if inserted.rowcount == 0:  # a concurrent submit of the same key won the race
        raise DuplicateJob(job.id)
    await record_entry(session, job.user_id, job.id, LedgerKind.RESERVE, job.cost, now)
    for key in job.face_keys:
        await add_blob_ref(session=session, blob_key=key, owner=f"job:{job.id}")
    return await get(session=session, job_id=job.id)  # type: ignore[return-value]


async def _refusal(session: AsyncSession, job: NewJob, today: str, daily_jobs_default: int) -> QuotaRefused:
    row = (await session.execute(select(t.users).where(t.users.c.id == job.user_id))).first()
    if row is None:
        return QuotaRefused(RefusalReason.UNKNOWN_USER)
    if row.banned:
        return QuotaRefused(RefusalReason.BANNED)
    if not row.unlimited and row.credits - row.reserved < job.cost:
        return QuotaRefused(RefusalReason.NO_CREDITS, needed=job.cost, available=row.credits - row.reserved)
    limit = row.daily_jobs_limit
    if limit is None:
        limit = (
            await session.execute(
                select(t.scope_settings.c.daily_jobs).where(t.scope_settings.c.scope == "global")
            )
        ).scalar() or daily_jobs_default
    return QuotaRefused(RefusalReason.DAILY_LIMIT, limit=int(limit))


async def get(*, session: AsyncSession, job_id: str) -> Job | None:
    return await session.get(Job, job_id)


async def claim(
    *, session: AsyncSession, worker: str, lease_s: float, running_cap: int, now: float
) -> Job | None:
    """Take the fairest runnable job: queued, due, and its owner under their running cap."""
    j, u = t.jobs.c, t.users.c
    other = t.jobs.alias("other")
    running_count = (
        select(func.count())
        .select_from(other)
        .where(other.c.user_id == j.user_id, other.c.state == JobState.RUNNING)
        .scalar_subquery()
    )
    excluded: list[int] = []
    for _ in range(8):
        candidate_query = (
            select(j.id, j.user_id, func.coalesce(u.running_cap, running_cap).label("cap"))
            .join(t.users, u.id == j.user_id)
            .where(
                j.state == JobState.QUEUED,
                j.run_after <= now,
                running_count < func.coalesce(u.running_cap, running_cap),
            )
            .order_by(j.priority.desc(), j.fair_key, j.created_at, j.id)
            .limit(1)
            .with_for_update(of=t.jobs, skip_locked=True)
        )
        if excluded:
            candidate_query = candidate_query.where(j.user_id.not_in(excluded))
        candidate = (await session.execute(candidate_query)).first()
        if candidate is None:
            return None
        if _is_postgres(session):
            # Claimers on other connections may be starting this user's jobs right now: serialize on
            # the user row, then count again with a fresh snapshot. (SQLite writers are serial already.)
            await session.execute(select(u.id).where(u.id == candidate.user_id).with_for_update())
            now_running = (
                await session.execute(
                    select(func.count())
                    .select_from(t.jobs)
                    .where(j.user_id == candidate.user_id, j.state == JobState.RUNNING)
                )
            ).scalar_one()
            if now_running >= candidate.cap:
                excluded.append(candidate.user_id)
                continue
        claimed = await session.execute(
            update(t.jobs)
            .where(j.id == candidate.id, j.state == JobState.QUEUED)
            .values(
                state=JobState.RUNNING,
                attempt=j.attempt + 1,
                lease_owner=worker,
                lease_until=now + lease_s,
                started_at=func.coalesce(j.started_at, now),
                updated_at=now,
            )
        )
        if claimed.rowcount == 1:
            job = await session.get(Job, candidate.id, populate_existing=True)
            return job
    return None


async def heartbeat(
    *, session: AsyncSession, job_id: str, attempt: int, lease_s: float, now: float
) -> Heartbeat | None:
    """Extend the lease. None means this attempt lost the job: stop working on it."""
    j = t.jobs.c
    row = (
        await session.execute(
            update(t.jobs)
            .where(j.id == job_id, j.attempt == attempt, j.state == JobState.RUNNING)
            .values(lease_until=now + lease_s, updated_at=now)
            .returning(j.cancel_requested, j.deadline_at)
        )
    ).first()
    return None if row is None else Heartbeat(bool(row.cancel_requested), row.deadline_at)


def _finish(job_id: str, attempt: int, state: JobState, now: float, **values: Any) -> Any:
    j = t.jobs.c
    return (
        update(t.jobs)
        .where(j.id == job_id, j.attempt == attempt, j.state == JobState.RUNNING)
        .values(
            state=state,
            finished_at=now,
            updated_at=now,
            lease_owner=None,
            lease_until=None,
            delivery_state=DeliveryState.PENDING,
            **values,
        )
        .returning(j.user_id, j.cost, j.created_at)
    )


async def complete(
    *,
    session: AsyncSession,
    job_id: str,
    attempt: int,
    images: Sequence[NewImage],
    now: float,
    backend: str | None = None,
    seed: str | None = None,
    spend_usd: float = 0.0,
) -> bool:
    """running → succeeded, charging the reservation. False if this attempt no longer owns the job."""
    values: dict[str, Any] = {"seed": seed, "spend_usd": spend_usd, "error": None, "error_detail": None}
    if backend is not None:
        values["backend"] = backend
    row = (await session.execute(_finish(job_id, attempt, JobState.SUCCEEDED, now, **values))).first()
    if row is None:
        return False
    u = t.users.c
    await session.execute(
        update(t.users)
        .where(u.id == row.user_id)
        .values(reserved=u.reserved - row.cost, credits=case((u.unlimited, u.credits), else_=u.credits - row.cost))
    )
    await record_entry(session, row.user_id, job_id, LedgerKind.COMMIT, row.cost, now)
    if images:
        await session.execute(
            t.images.insert(),
            [
                {
                    "job_id": job_id,
                    "index": image.index,
                    "blob_key": image.blob_key,
                    "sha256": image.sha256,
                    "content_type": image.content_type,
                    "size_bytes": image.size_bytes,
                    "width": image.width,
                    "height": image.height,
                    "nsfw": image.nsfw,
                }
                for image in images
            ],
        )
        for key in {image.blob_key for image in images}:
            await add_blob_ref(session=session, blob_key=key, owner=f"job:{job_id}")
    await add_event(session=session, job_id=job_id, kind="succeeded", now=now, data={"images": len(images)})
    return True


async def fail(
    *,
    session: AsyncSession,
    job_id: str,
    attempt: int,
    reason: str,
    now: float,
    detail: str = "",
    spend_usd: float = 0.0,
) -> bool:
    """running → failed, refunding the reservation. False if this attempt no longer owns the job."""
    row = (
        await session.execute(
            _finish(
                job_id, attempt, JobState.FAILED, now, error=reason, error_detail=detail[:1024], spend_usd=spend_usd
            )
        )
    ).first()
    if row is None:
        return False
    await _refund(session, job_id, row.user_id, row.cost, row.created_at, now)
    await add_event(session=session, job_id=job_id, kind="failed", now=now, data={"reason": reason})
    return True


async def retry_later(
    *, session: AsyncSession, job_id: str, attempt: int, run_after: float, reason: str, now: float
) -> bool:
    """running → queued until ``run_after`` (the next claim starts a new attempt)."""
    j = t.jobs.c
    result = await session.execute(
        update(t.jobs)
        .where(j.id == job_id, j.attempt == attempt, j.state == JobState.RUNNING, j.cancel_requested.is_(False))
        .values(
            state=JobState.QUEUED,
            run_after=run_after,
            lease_owner=None,
            lease_until=None,
            error=reason,
            updated_at=now,
        )
    )
    if result.rowcount == 0:
        return False
    await add_event(session=session, job_id=job_id, kind="retry", now=now, data={"reason": reason})
    return True


async def cancel(*, session: AsyncSession, job_id: str, now: float) -> CancelOutcome:
    """Cancel at once if queued (refund now); ask the worker if running; nothing if finished."""
    j = t.jobs.c
    row = (
        await session.execute(
            update(t.jobs)
            .where(j.id == job_id, j.state == JobState.QUEUED)
            .values(
                state=JobState.CANCELLED,
                finished_at=now,
                updated_at=now,
                error="cancelled",
                delivery_state=DeliveryState.PENDING,
            )
            .returning(j.user_id, j.cost, j.created_at)
        )
    ).first()
    if row is not None:
        await _refund(session, job_id, row.user_id, row.cost, row.created_at, now)
        await add_event(session=session, job_id=job_id, kind="cancelled", now=now)
        return CancelOutcome.CANCELLED
    requested = await session.execute(
        update(t.jobs)
        .where(j.id == job_id, j.state == JobState.RUNNING)
        .values(cancel_requested=True, updated_at=now)
    )
    return CancelOutcome.REQUESTED if requested.rowcount else CancelOutcome.NOOP


async def finish_cancelled(*, session: AsyncSession, job_id: str, attempt: int, now: float) -> bool:
    """The worker stopped a job whose cancel was requested: running → cancelled, refunded."""
    row = (
        await session.execute(_finish(job_id, attempt, JobState.CANCELLED, now, error="cancelled"))
    ).first()
    if row is None:
        return False
    await _refund(session, job_id, row.user_id, row.cost, row.created_at, now)
    await add_event(session=session, job_id=job_id, kind="cancelled", now=now)
    return True


async def expire_leases(*, session: AsyncSession, now: float, limit: int = 100) -> list[str]:
    """Jobs whose worker stopped heartbeating: back to the queue, or ended if out of attempts."""
    j = t.jobs.c
    expired = (
        await session.execute(
            select(j.id, j.attempt, j.max_attempts, j.cancel_requested, j.deadline_at)
            .where(j.state == JobState.RUNNING, j.lease_until < now)
            .limit(limit)
        )
    ).all()
    handled: list[str] = []
    for row in expired:
        if row.cancel_requested:
            done = await finish_cancelled(session=session, job_id=row.id, attempt=row.attempt, now=now)
        elif row.attempt >= row.max_attempts or (row.deadline_at is not None and row.deadline_at <= now):
            done = await fail(session=session, job_id=row.id, attempt=row.attempt, reason="lease_expired", now=now)
        else:
            result = await session.execute(
                update(t.jobs)
                .where(j.id == row.id, j.attempt == row.attempt, j.state == JobState.RUNNING, j.lease_until < now)
                .values(state=JobState.QUEUED, run_after=now, lease_owner=None, lease_until=None, updated_at=now)
            )
            done = result.rowcount == 1
            if done:
                await add_event(session=session, job_id=row.id, kind="lease_expired", now=now)
        if done:
            handled.append(row.id)
    return handled


async def set_provider_ref(
    *, session: AsyncSession, job_id: str, attempt: int, ref: dict[str, Any] | None, now: float
) -> bool:
    """Remember the provider's request before waiting on it, so a restart resumes instead of re-paying."""
    j = t.jobs.c
    result = await session.execute(
        update(t.jobs)
        .where(j.id == job_id, j.attempt == attempt, j.state == JobState.RUNNING)
        .values(provider_ref=ref, updated_at=now)
    )
    return bool(result.rowcount == 1)


async def set_backend(*, session: AsyncSession, job_id: str, attempt: int, backend: str, now: float) -> bool:
    j = t.jobs.c
    result = await session.execute(
        update(t.jobs)
        .where(j.id == job_id, j.attempt == attempt, j.state == JobState.RUNNING)
        .values(backend=backend, provider_ref=None, updated_at=now)
    )
    if result.rowcount == 1:
        await add_event(session=session, job_id=job_id, kind="backend", now=now, data={"backend": backend})
    return bool(result.rowcount == 1)


async def queue_position(*, session: AsyncSession, job_id: str) -> int | None:
    """1-based place among queued jobs in claim order; None once the job left the queue."""
    j = t.jobs.c
    me = (
        await session.execute(
            select(j.priority, j.fair_key, j.created_at, j.id).where(j.id == job_id, j.state == JobState.QUEUED)
        )
    ).first()
    if me is None:
        return None
    ahead = (
        await session.execute(
            select(func.count())
            .select_from(t.jobs)
            .where(
                j.state == JobState.QUEUED,
                or_(
                    j.priority > me.priority,
                    and_(
                        j.priority == me.priority,
                        or_(
                            j.fair_key < me.fair_key,
                            and_(
                                j.fair_key == me.fair_key,
                                or_(j.created_at < me.created_at, and_(j.created_at == me.created_at, j.id < me.id)),
                            ),
                        ),
                    ),
                ),
            )
        )
    ).scalar_one()
    return int(ahead) + 1


async def pending_deliveries(*, session: AsyncSession, platforms: Sequence[str], limit: int = 50) -> list[Job]:
    j, u = t.jobs.c, t.users.c
    ids = (
        await session.execute(
            select(j.id)
            .join(t.users, u.id == j.user_id)
            .where(j.delivery_state == DeliveryState.PENDING, u.platform.in_(list(platforms)))
            .order_by(j.finished_at)
            .limit(limit)
        )
    ).scalars()
    found = [await session.get(Job, job_id) for job_id in ids]
    return [job for job in found if job is not None]


async def mark_delivery(
    *, session: AsyncSession, job_id: str, state: DeliveryState, path: str | None, now: float
) -> bool:
    """pending → delivered or undeliverable, once."""
    j = t.jobs.c
    result = await session.execute(
        update(t.jobs)
        .where(j.id == job_id, j.delivery_state == DeliveryState.PENDING)
        .values(delivery_state=state, delivery_path=path, updated_at=now)
    )
    return bool(result.rowcount == 1)


async def count_delivery_attempt(*, session: AsyncSession, job_id: str, now: float) -> int:
    j = t.jobs.c
    row = (
        await session.execute(
            update(t.jobs)
            .where(j.id == job_id)
            .values(delivery_attempts=j.delivery_attempts + 1, updated_at=now)
            .returning(j.delivery_attempts)
        )
    ).first()
    return 0 if row is None else int(row.delivery_attempts)


async def set_reply_target(*, session: AsyncSession, job_id: str, reply_target: dict[str, Any], now: float) -> None:
    await session.execute(
        update(t.jobs).where(t.jobs.c.id == job_id).values(reply_target=reply_target, updated_at=now)
    )


async def add_event(
    *, session: AsyncSession, job_id: str, kind: str, now: float, data: dict[str, Any] | None = None
) -> None:
    await session.execute(t.job_events.insert().values(job_id=job_id, at=now, kind=kind, data=data or {}))


async def add_blob_ref(*, session: AsyncSession, blob_key: str, owner: str) -> None:
    await session.execute(
        _insert(session, t.blob_refs).values(blob_key=blob_key, owner=owner).on_conflict_do_nothing()
    )


async def _refund(session: AsyncSession, job_id: str, user_id: int, cost: int, created_at: float, now: float) -> None:
    u = t.users.c
    # A refunded job gives back its daily slot too, if it is still the same UTC day.
    await session.execute(
        update(t.users)
        .where(u.id == user_id)
        .values(
            reserved=u.reserved - cost,
            day_jobs=case(
                (and_(u.day == utc_day(created_at), u.day_jobs > 0), u.day_jobs - 1), else_=u.day_jobs
            ),
        )
    )
    await record_entry(session, user_id, job_id, LedgerKind.REFUND, cost, now)


__all__ = [
    "CancelOutcome",
    "Heartbeat",
    "NewImage",
    "NewJob",
    "add_blob_ref",
    "add_event",
    "cancel",
    "claim",
    "complete",
    "expire_leases",
    "fail",
    "finish_cancelled",
    "get",
    "heartbeat",
    "mark_delivery",
    "pending_deliveries",
    "queue_position",
    "retry_later",
    "set_backend",
    "set_provider_ref",
    "submit",
]
