"""The job ledger: submit, claim, heartbeat and the terminal transitions, as conditional updates.

Every function takes the open transaction as ``session`` (see ``Database.write``). A transition that
finds the row in another state changes nothing and reports so: the loser of a race never wins late.
Quota moves in the same transaction as the job (see ``storage.quota``): reserve on submit, commit on
success, refund on failure or cancel.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy import Float, String, and_, bindparam, case, cast, false, func, literal_column, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from storage import blob_refs, quota
from storage import tables as t
from storage.errors import DuplicateJob
from storage.models import Image, Job
from storage.states import DeliveryState, JobState, LedgerKind


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
    likeness: float | None = None  # the face judge's score, when the output was scored
    judge: str | None = None


class CancelOutcome(StrEnum):
    CANCELLED = "cancelled"  # was queued: cancelled and refunded now
    REQUESTED = "requested"  # is running: the worker sees it at its next heartbeat
    NOOP = "noop"  # already finished, or unknown


@dataclass(frozen=True)
class Heartbeat:
    cancel_requested: bool
    deadline_at: float | None


def _is_postgres(session: Connection) -> bool:
    return bool(session.dialect.name == "postgresql")


_u, _j = t.users.c, t.jobs.c

# The hot-path statements are built once: building and cache-keying a statement costs more than
# SQLite takes to run it.
_INSERT_JOB = {
    "sqlite": sqlite_insert(t.jobs).on_conflict_do_nothing(index_elements=["id"]),
    "postgresql": pg_insert(t.jobs).on_conflict_do_nothing(index_elements=["id"]),
}


def submit(*, session: Connection, job: NewJob, now: float, daily_jobs_default: int) -> float:
    """Queue a job and reserve its cost; returns its fair-queue tag.

    Raises DuplicateJob or QuotaRefused; the caller's transaction then rolls back, so nothing is written.
    """
    fair_key = quota.reserve(
        session=session, user_id=job.user_id, cost=job.cost, now=now, daily_jobs_default=daily_jobs_default
    )
    if fair_key is None:
        # A repeated chat event for a job that exists is a duplicate, whatever the quota says now.
        if session.execute(select(_j.id).where(_j.id == job.id)).first():
            raise DuplicateJob(job.id)
        raise quota.refusal(session=session, user_id=job.user_id, cost=job.cost, daily_jobs_default=daily_jobs_default)
    inserted = session.execute(
        _INSERT_JOB[session.dialect.name],
        {
            "id": job.id,
            "user_id": job.user_id,
            "kind": job.kind,
            "parent_id": job.parent_id,
            "state": JobState.QUEUED,
            "params": job.params,
            "face_keys": job.face_keys,
            "route": job.route,
            "pinned": job.pinned,
            "attempt": 0,
            "max_attempts": job.max_attempts,
            "fair_key": fair_key,
            "run_after": now,
            "deadline_at": None if job.deadline_s is None else now + job.deadline_s,
            "cancel_requested": False,
            "cost": job.cost,
            "spend_usd": 0.0,
            "reply_target": job.reply_target,
            "delivery_state": DeliveryState.NONE,
            "delivery_attempts": 0,
            "expired": False,
            "created_at": now,
            "updated_at": now,
        },
    )
    if inserted.rowcount == 0:  # the chat event was seen before: the job exists
        raise DuplicateJob(job.id)
    quota.record_entry(session, job.user_id, job.id, LedgerKind.RESERVE, job.cost, now)
    for key in job.face_keys:
        blob_refs.add(session=session, blob_key=key, owner=blob_refs.job_owner(job.id))
    return fair_key


def to_job(row: Any) -> Job:
    return Job.model_validate(dict(row._mapping))


def get(*, session: Connection, job_id: str) -> Job | None:
    row = session.execute(select(t.jobs).where(_j.id == job_id)).first()
    return None if row is None else to_job(row)


_CAP = func.coalesce(_u.running_cap, bindparam("default_cap"))
_CANDIDATE = (
    select(_j.id, _j.user_id)
    .join(t.users, _u.id == _j.user_id)
    .where(
        t.QUEUED,
        _j.run_after <= bindparam("now"),
        _u.running < _CAP,
        _u.banned.is_(False),  # a ban cancels the user's queue; this covers a ban set by other means
        _j.user_id.not_in(bindparam("excluded", expanding=True)),
    )
    .order_by(_j.fair_key, _j.created_at, _j.id)
    .limit(1)
    .with_for_update(of=t.jobs, skip_locked=True)
)
# Taking a running slot is conditional on the counter under the user row's lock, so concurrent claimers
# of one user's jobs cannot pass the cap together.
_TAKE_SLOT = update(t.users).where(_u.id == bindparam("uid"), _u.running < _CAP).values(running=_u.running + 1)
_START = dict(
    state=JobState.RUNNING,
    attempt=_j.attempt + 1,
    lease_owner=bindparam("worker"),
    lease_until=bindparam("lease_end"),
    started_at=func.coalesce(_j.started_at, bindparam("now")),
    updated_at=bindparam("now"),
)
_CLAIM = update(t.jobs).where(_j.id == bindparam("job"), t.QUEUED).values(**_START).returning(*t.jobs.c)


def _serving(backends: frozenset[str]) -> Any:
    """Jobs one of these backends may render: a route naming one of them (a pinned job: first), or no route.

    The route is JSON text alike on both databases (``["local", "fal-flux-pulid"]``), so a quoted name
    matches exactly one entry."""
    route = cast(_j.route, String)
    named = [route.like(f'%"{name}"%') for name in sorted(backends)]
    first = [route.like(f'["{name}"%') for name in sorted(backends)]
    return or_(route == "[]", and_(_j.pinned.is_(False), or_(false(), *named)), and_(_j.pinned, or_(false(), *first)))


@functools.cache
def _claim_statements(backends: frozenset[str] | None, one_job: bool = False) -> tuple[Any, Any, Any]:
    """(SQLite candidate, PostgreSQL claim, PostgreSQL blocked-user query) for a claimer serving ``backends``
    (None: any job), and with ``one_job`` only the job named by the ``only`` parameter. Built once per set: a
    worker's backends rarely change."""
    # PostgreSQL does the whole claim in one statement (one round trip, no explicit transaction): pick the
    # candidate skipping rows other claimers hold, take the user's slot (re-checked on the newest row version
    # if another claimer got there first), start the job. No slot, no start: the statement returns nothing.
    candidate = _CANDIDATE if backends is None else _CANDIDATE.where(_serving(backends))
    if one_job:
        candidate = candidate.where(_j.id == bindparam("only"))
    pg_candidate = candidate.cte("candidate")
    pg_slot = (
        update(t.users)
        .where(_u.id == pg_candidate.c.user_id, _u.running < _CAP)
        .values(running=_u.running + 1)
        .returning(_u.id)
        .cte("slot")
    )
    pg_claim = (
        update(t.jobs)
        .where(_j.id == pg_candidate.c.id, _j.user_id == pg_slot.c.id)
        .values(**_START)
        .returning(*t.jobs.c)
    )
    return candidate, pg_claim, select(candidate.subquery().c.user_id)


def claim(
    *,
    session: Connection,
    worker: str,
    lease_s: float,
    running_cap: int,
    now: float,
    serves: Collection[str] | None = None,
    job_id: str | None = None,
    peek: bool = False,
) -> Job | None:
    """Take the fairest runnable job: queued, due, its owner under their running cap, and — when ``serves``
    names the claimer's backends — one that a backend of its route is among them. With ``job_id``, that job
    or nothing: a claimer run for one job (`likeness generate`) never takes another's.

    On PostgreSQL this is a single statement, safe to run outside an explicit transaction. With ``peek`` (a
    poll that expects nothing) it first asks whether any job is due for this claimer: an idle poll then costs
    one read instead of a claim and a read.
    """
    values = {"now": now, "default_cap": running_cap, "worker": worker, "lease_end": now + lease_s, "only": job_id}
    candidate_query, pg_claim, pg_candidate_user = _claim_statements(
        None if serves is None else frozenset(serves), job_id is not None
    )
    ask_first = peek and _is_postgres(session)
    if ask_first and session.execute(pg_candidate_user, {**values, "excluded": []}).scalar() is None:
        return None
    excluded: list[int] = []
    for _ in range(8):
        if _is_postgres(session):
            claimed = session.execute(pg_claim, {**values, "excluded": excluded}).first()
            if claimed is not None:
                return to_job(claimed)
            # Nothing claimed: the queue is empty, or the head's owner just reached their cap.
            blocked = session.execute(pg_candidate_user, {**values, "excluded": excluded}).scalar()
            if blocked is None:
                return None
            excluded.append(blocked)
            continue
        candidate = session.execute(candidate_query, {**values, "excluded": excluded}).first()
        if candidate is None:
            return None
        session.execute(_TAKE_SLOT, {"uid": candidate.user_id, "default_cap": running_cap})
        claimed = session.execute(_CLAIM, {**values, "job": candidate.id}).first()
        if claimed is not None:
            return to_job(claimed)
    return None


_HEARTBEAT = (
    update(t.jobs)
    .where(_j.id == bindparam("job"), _j.attempt == bindparam("att"), _j.state == literal_column("'running'"))
    .values(lease_until=bindparam("lease_end"), updated_at=bindparam("now"))
    .returning(_j.cancel_requested, _j.deadline_at)
)


def heartbeat(*, session: Connection, job_id: str, attempt: int, lease_s: float, now: float) -> Heartbeat | None:
    """Extend the lease. None means this attempt lost the job: stop working on it."""
    row = session.execute(_HEARTBEAT, {"job": job_id, "att": attempt, "lease_end": now + lease_s, "now": now}).first()
    return None if row is None else Heartbeat(bool(row.cancel_requested), row.deadline_at)


# One statement ends a running attempt, whatever the outcome; the conditions make it first-writer-wins.
_FINISH = (
    update(t.jobs)
    .where(_j.id == bindparam("job"), _j.attempt == bindparam("att"), _j.state == literal_column("'running'"))
    .values(
        state=bindparam("outcome"),
        finished_at=bindparam("now"),
        updated_at=bindparam("now"),
        lease_owner=None,
        lease_until=None,
        delivery_state=DeliveryState.PENDING,
        error=bindparam("reason"),
        error_detail=bindparam("detail"),
        spend_usd=_j.spend_usd + bindparam("spend", type_=Float),
        seed=func.coalesce(bindparam("result_seed"), _j.seed),
        backend=func.coalesce(bindparam("result_backend"), _j.backend),
    )
    .returning(_j.user_id, _j.cost, _j.created_at)
)
# A render that finishes after its user asked to cancel ends cancelled and refunded, as the user was told.
_COMPLETE = _FINISH.values(
    state=case((_j.cancel_requested, literal_column("'cancelled'")), else_=bindparam("outcome")),
    error=case((_j.cancel_requested, literal_column("'cancelled'")), else_=bindparam("reason")),
).returning(_j.state)
_RELEASE_SLOT = update(t.users).where(_u.id == bindparam("uid")).values(running=_u.running - 1)


def _finish(
    session: Connection,
    job_id: str,
    attempt: int,
    outcome: JobState,
    now: float,
    *,
    reason: str | None = None,
    detail: str | None = None,
    spend_usd: float = 0.0,
    seed: str | None = None,
    backend: str | None = None,
    statement: Any = _FINISH,
) -> Any:
    return session.execute(
        statement,
        {
            "job": job_id,
            "att": attempt,
            "outcome": outcome,
            "now": now,
            "reason": reason,
            "detail": None if detail is None else detail[:1024],
            "spend": spend_usd,
            "result_seed": seed,
            "result_backend": backend,
        },
    ).first()


def complete(
    *,
    session: Connection,
    job_id: str,
    attempt: int,
    images: Sequence[NewImage],
    now: float,
    backend: str | None = None,
    seed: str | None = None,
    spend_usd: float = 0.0,
) -> JobState | None:
    """running → succeeded, charging the reservation; None if this attempt no longer owns the job.

    If a cancel was requested meanwhile (the worker had not seen it yet) the job ends cancelled and refunded
    instead, without its images: the user was told they would not be charged."""
    row = _finish(
        session,
        job_id,
        attempt,
        JobState.SUCCEEDED,
        now,
        spend_usd=spend_usd,
        seed=seed,
        backend=backend,
        statement=_COMPLETE,
    )
    if row is None:
        return None
    if row.state == JobState.CANCELLED:
        _refund(session, job_id, row, now, was_running=True)
        add_event(session=session, job_id=job_id, kind="cancelled", now=now)
        return JobState.CANCELLED
    quota.commit(session=session, user_id=row.user_id, job_id=job_id, cost=row.cost, now=now)
    if images:
        session.execute(
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
                    "likeness": image.likeness,
                    "judge": image.judge,
                }
                for image in images
            ],
        )
        for key in {image.blob_key for image in images}:
            blob_refs.add(session=session, blob_key=key, owner=blob_refs.job_owner(job_id))
    return JobState.SUCCEEDED


def fail(
    *,
    session: Connection,
    job_id: str,
    attempt: int,
    reason: str,
    now: float,
    detail: str = "",
    spend_usd: float = 0.0,
) -> bool:
    """running → failed, refunding the reservation. False if this attempt no longer owns the job."""
    row = _finish(session, job_id, attempt, JobState.FAILED, now, reason=reason, detail=detail, spend_usd=spend_usd)
    if row is None:
        return False
    _refund(session, job_id, row, now, was_running=True)
    add_event(session=session, job_id=job_id, kind="failed", now=now, data={"reason": reason})
    return True


def retry_later(*, session: Connection, job_id: str, attempt: int, run_after: float, reason: str, now: float) -> bool:
    """running → queued until ``run_after`` (the next claim starts a new attempt)."""
    j = t.jobs.c
    row = session.execute(
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
        .returning(j.user_id)
    ).first()
    if row is None:
        return False
    session.execute(_RELEASE_SLOT, {"uid": row.user_id})
    add_event(session=session, job_id=job_id, kind="retry", now=now, data={"reason": reason})
    return True


def cancel(*, session: Connection, job_id: str, now: float) -> CancelOutcome:
    """Cancel at once if queued (refund now); ask the worker if running; nothing if finished."""
    j = t.jobs.c
    row = (
        session.execute(
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
        _refund(session, job_id, row, now, was_running=False)
        add_event(session=session, job_id=job_id, kind="cancelled", now=now)
        return CancelOutcome.CANCELLED
    requested = session.execute(
        update(t.jobs).where(j.id == job_id, j.state == JobState.RUNNING).values(cancel_requested=True, updated_at=now)
    )
    return CancelOutcome.REQUESTED if requested.rowcount else CancelOutcome.NOOP


def cancel_all_of_user(*, session: Connection, user_id: int, now: float) -> list[str]:
    """Cancel every unfinished job of a user (e.g. just banned): queued ones now, refunded; running ones are
    asked to stop, and end cancelled and refunded even if their render completes first. Returns the queued
    ones cancelled now."""
    rows = _end_queued(session, _j.user_id == user_id, JobState.CANCELLED, "cancelled", now)
    session.execute(
        update(t.jobs)
        .where(_j.user_id == user_id, _j.state == JobState.RUNNING)
        .values(cancel_requested=True, updated_at=now)
    )
    return sorted(row.id for row in rows)


def finish_cancelled(*, session: Connection, job_id: str, attempt: int, now: float) -> bool:
    """The worker stopped a job whose cancel was requested: running → cancelled, refunded."""
    row = _finish(session, job_id, attempt, JobState.CANCELLED, now, reason="cancelled")
    if row is None:
        return False
    _refund(session, job_id, row, now, was_running=True)
    add_event(session=session, job_id=job_id, kind="cancelled", now=now)
    return True


def expire_leases(*, session: Connection, now: float, limit: int = 100) -> list[str]:
    """Jobs whose worker stopped heartbeating: back to the queue, or ended if out of attempts."""
    return _end_leases(session, now, limit, _lock_users(session, _expired_owners(session, now, limit)))


def expire_deadlines(*, session: Connection, now: float, limit: int = 100) -> list[str]:
    """Queued jobs past their deadline: failed ("deadline") and refunded now, rather than holding their
    credits until a claim finds them (a long wait for a retry, a user at their running cap, a long queue)."""
    return _end_overdue(session, now, limit, _lock_users(session, _overdue_owners(session, now, limit)))


def sweep(*, session: Connection, now: float) -> tuple[list[str], list[str]]:
    """Both periodic sweeps in one transaction: (jobs whose lease ran out, queued jobs past their deadline)."""
    owners = _lock_users(session, _expired_owners(session, now, 100) | _overdue_owners(session, now, 100))
    return _end_leases(session, now, 100, owners), _end_overdue(session, now, 100, owners)


# A sweep ends jobs of many users, and every process sweeps. It locks the owners' rows first, in id order,
# before any job row, and then ends only jobs of those owners: two sweeps queue on the same user instead of
# each holding one user the other needs, and a transaction that holds a user and then wants one of its jobs
# (a ban, /forget) is waited for instead of meeting a sweep that holds that job and waits for the user. The
# jobs themselves are then locked as found, skipping those another sweep took, their state re-checked on the
# newest version.


def _expired_owners(session: Connection, now: float, limit: int) -> set[int]:
    query = select(_j.user_id).where(_j.state == JobState.RUNNING, _j.lease_until < now).distinct().limit(limit)
    return set(session.execute(query).scalars())


def _overdue_owners(session: Connection, now: float, limit: int) -> set[int]:
    query = select(_j.user_id).where(t.QUEUED, _j.deadline_at <= now).distinct().limit(limit)
    return set(session.execute(query).scalars())


def _lock_users(session: Connection, user_ids: set[int]) -> list[int]:
    """Lock these users' rows in id order; returns them."""
    owners = sorted(user_ids)
    if owners:
        session.execute(select(_u.id).where(_u.id.in_(owners)).order_by(_u.id).with_for_update())
    return owners


def _end_leases(session: Connection, now: float, limit: int, owners: list[int]) -> list[str]:
    if not owners:
        return []
    j = t.jobs.c
    # Each row is locked as it is found (and its expiry re-checked on the newest version), so a heartbeat
    # committed meanwhile keeps its job, and one in flight now waits for this sweep and then finds the job
    # gone, whichever branch below ends it. A row a heartbeat holds right now is alive: skipped.
    expired = (
        session.execute(
            select(j.id, j.user_id, j.attempt, j.max_attempts, j.cancel_requested, j.deadline_at)
            .where(j.state == JobState.RUNNING, j.lease_until < now, j.user_id.in_(owners))
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    ).all()
    handled: list[str] = []
    for row in expired:
        if row.cancel_requested:
            done = finish_cancelled(session=session, job_id=row.id, attempt=row.attempt, now=now)
        elif row.attempt >= row.max_attempts or (row.deadline_at is not None and row.deadline_at <= now):
            done = fail(session=session, job_id=row.id, attempt=row.attempt, reason="lease_expired", now=now)
        else:
            result = session.execute(
                update(t.jobs)
                .where(j.id == row.id, j.attempt == row.attempt, j.state == JobState.RUNNING, j.lease_until < now)
                .values(state=JobState.QUEUED, run_after=now, lease_owner=None, lease_until=None, updated_at=now)
            )
            done = result.rowcount == 1
            if done:
                session.execute(_RELEASE_SLOT, {"uid": row.user_id})
                add_event(session=session, job_id=row.id, kind="lease_expired", now=now)
        if done:
            handled.append(row.id)
    return handled


def _end_overdue(session: Connection, now: float, limit: int, owners: list[int]) -> list[str]:
    if not owners:
        return []
    # Rows are locked as found: a concurrent claim passes them by, a concurrent cancel finds them ended.
    due = list(
        session.execute(
            select(_j.id)
            .where(t.QUEUED, _j.deadline_at <= now, _j.user_id.in_(owners))
            .order_by(_j.deadline_at, _j.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).scalars()
    )
    if not due:
        return []
    ended = _end_queued(session, _j.id.in_(due), JobState.FAILED, "deadline", now)
    return sorted(row.id for row in ended)


def _end_queued(session: Connection, which: Any, state: JobState, reason: str, now: float) -> list[Any]:
    """End the queued jobs ``which`` selects in ``state`` for ``reason``: refunded, the user told (delivery
    pending), an event each. Returns the ended rows."""
    rows = session.execute(
        update(t.jobs)
        .where(which, t.QUEUED)
        .values(state=state, finished_at=now, updated_at=now, error=reason, delivery_state=DeliveryState.PENDING)
        .returning(_j.id, _j.user_id, _j.cost, _j.created_at)
    ).all()
    for row in rows:
        _refund(session, row.id, row, now, was_running=False)
        data = None if state is JobState.CANCELLED else {"reason": reason}
        add_event(session=session, job_id=row.id, kind=str(state), now=now, data=data)
    return list(rows)


def set_provider_ref(*, session: Connection, job_id: str, attempt: int, ref: dict[str, Any], now: float) -> bool:
    """Remember the provider's request (and so the backend) before waiting on it, so a restart resumes
    instead of re-paying."""
    j = t.jobs.c
    result = session.execute(
        update(t.jobs)
        .where(j.id == job_id, j.attempt == attempt, j.state == JobState.RUNNING)
        .values(provider_ref=ref, backend=ref["backend"], updated_at=now)
    )
    return bool(result.rowcount == 1)


def set_backend(*, session: Connection, job_id: str, attempt: int, backend: str, now: float) -> bool:
    j = t.jobs.c
    result = session.execute(
        update(t.jobs)
        .where(j.id == job_id, j.attempt == attempt, j.state == JobState.RUNNING)
        .values(backend=backend, provider_ref=None, updated_at=now)
    )
    if result.rowcount == 1:
        add_event(session=session, job_id=job_id, kind="backend", now=now, data={"backend": backend})
    return bool(result.rowcount == 1)


def queue_position(*, session: Connection, job_id: str) -> int | None:
    """1-based place among queued jobs in claim order; None once the job left the queue."""
    j = t.jobs.c
    me = (
        session.execute(select(j.fair_key, j.created_at, j.id).where(j.id == job_id, j.state == JobState.QUEUED))
    ).first()
    if me is None:
        return None
    ahead = (
        session.execute(
            select(func.count())
            .select_from(t.jobs)
            .where(
                t.QUEUED,
                or_(
                    j.fair_key < me.fair_key,
                    and_(
                        j.fair_key == me.fair_key,
                        or_(j.created_at < me.created_at, and_(j.created_at == me.created_at, j.id < me.id)),
                    ),
                ),
            )
        )
    ).scalar_one()
    return int(ahead) + 1


def images_of(*, session: Connection, job_id: str) -> list[Image]:
    rows = session.execute(select(t.images).where(t.images.c.job_id == job_id).order_by(t.images.c.index))
    return [Image.model_validate(dict(row._mapping)) for row in rows]


def add_event(*, session: Connection, job_id: str, kind: str, now: float, data: dict[str, Any] | None = None) -> None:
    session.execute(t.job_events.insert().values(job_id=job_id, at=now, kind=kind, data=data or {}))


def _refund(session: Connection, job_id: str, ended: Any, now: float, *, was_running: bool) -> None:
    """Refund a job from the row its ending statement returned (owner, cost, creation time)."""
    quota.refund(
        session=session,
        user_id=ended.user_id,
        job_id=job_id,
        cost=ended.cost,
        created_at=ended.created_at,
        now=now,
        was_running=was_running,
    )


def release(*, session: Connection, job_id: str, attempt: int, now: float) -> bool:
    """A stopping worker hands a running job back: queued again at once, still reserved, its provider request
    kept for the next worker to resume. The attempt it used does not count against the job's tries."""
    row = session.execute(
        update(t.jobs)
        .where(_j.id == job_id, _j.attempt == attempt, _j.state == literal_column("'running'"))
        .values(
            state=JobState.QUEUED,
            run_after=now,
            lease_owner=None,
            lease_until=None,
            max_attempts=_j.max_attempts + 1,
            updated_at=now,
        )
        .returning(_j.user_id)
    ).first()
    if row is None:
        return False
    session.execute(_RELEASE_SLOT, {"uid": row.user_id})
    add_event(session=session, job_id=job_id, kind="released", now=now)
    return True
