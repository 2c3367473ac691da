"""Delivery bookkeeping: where a job's result goes, which finished jobs still owe a reply, and whether it arrived.

A failed try is rescheduled on the job row (``delivery_next_at``), so retries survive a restart; the reply's
messages already posted are counted (``delivery_parts``), so a retry resumes after them. A result that is
finally undeliverable is refunded if it was charged: the ledger's unique (job, kind) makes that once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, bindparam, case, or_, select, update
from sqlalchemy.engine import Connection

from storage import quota
from storage import tables as t
from storage.jobs import to_job
from storage.models import Job
from storage.states import DeliveryState, JobState, LedgerKind

_j, _u = t.jobs.c, t.users.c


def set_reply_target(*, session: Connection, job_id: str, reply_target: dict[str, Any], now: float) -> None:
    session.execute(update(t.jobs).where(_j.id == job_id).values(reply_target=reply_target, updated_at=now))


def pending_deliveries(
    *, session: Connection, platforms: Sequence[str], now: float | None = None, limit: int = 50
) -> list[Job]:
    """Finished jobs of users on these platforms whose result has not reached the chat and whose next try
    is due at ``now`` (None: every one, due or not), oldest first."""
    query = (
        select(t.jobs).join(t.users, _u.id == _j.user_id).where(t.DELIVERY_PENDING, _u.platform.in_(list(platforms)))
    )
    if now is not None:
        query = query.where(or_(_j.delivery_next_at.is_(None), _j.delivery_next_at <= now))
    rows = session.execute(query.order_by(_j.finished_at, _j.id).limit(limit))
    return [to_job(row) for row in rows]


def mark_delivery(*, session: Connection, job_id: str, state: DeliveryState, path: str | None, now: float) -> bool:
    """pending → delivered (or undeliverable, without a refund: see ``give_up``), once."""
    result = session.execute(
        update(t.jobs)
        .where(_j.id == job_id, _j.delivery_state == DeliveryState.PENDING)
        .values(delivery_state=state, delivery_path=path, delivery_next_at=None, updated_at=now)
    )
    return bool(result.rowcount == 1)


def record_parts(*, session: Connection, job_id: str, parts: int, now: float) -> bool:
    """The first ``parts`` messages of the reply are posted; the count only grows while delivery is pending."""
    result = session.execute(
        update(t.jobs)
        .where(_j.id == job_id, _j.delivery_state == DeliveryState.PENDING, _j.delivery_parts < parts)
        .values(delivery_parts=parts, updated_at=now)
    )
    return bool(result.rowcount == 1)


def retry_delivery(*, session: Connection, job_id: str, next_at: float, now: float) -> int:
    """A try failed for a reason that may pass: count it and try again at ``next_at``. Returns the tries so far
    (0 if the delivery is no longer pending). The first failure starts the retry window."""
    row = session.execute(
        update(t.jobs)
        .where(_j.id == job_id, _j.delivery_state == DeliveryState.PENDING)
        .values(
            delivery_attempts=_j.delivery_attempts + 1,
            delivery_next_at=next_at,
            delivery_failing_since=case((_j.delivery_failing_since.is_(None), now), else_=_j.delivery_failing_since),
            updated_at=now,
        )
        .returning(_j.delivery_attempts)
    ).first()
    return 0 if row is None else int(row.delivery_attempts)


# A charge given back: the credits (unlimited users never paid any), and the day's job slot if it is still the
# day the job was made.
_RETURN_CHARGE = (
    update(t.users)
    .where(_u.id == bindparam("uid"))
    .values(
        credits=case((_u.unlimited, _u.credits), else_=_u.credits + bindparam("amount")),
        day_jobs=case((and_(_u.day == bindparam("job_day"), _u.day_jobs > 0), _u.day_jobs - 1), else_=_u.day_jobs),
    )
)


def give_up(*, session: Connection, job_id: str, now: float) -> bool:
    """pending → undeliverable, once; a succeeded job's charge is refunded in the same transaction.

    Failed and cancelled jobs were refunded when they ended; their undeliverable notice costs nothing."""
    row = session.execute(
        update(t.jobs)
        .where(_j.id == job_id, _j.delivery_state == DeliveryState.PENDING)
        .values(delivery_state=DeliveryState.UNDELIVERABLE, delivery_path=None, delivery_next_at=None, updated_at=now)
        .returning(_j.user_id, _j.state, _j.cost, _j.created_at)
    ).first()
    if row is None:
        return False
    if row.state == JobState.SUCCEEDED:
        charged = session.execute(
            select(t.ledger.c.amount).where(t.ledger.c.job_id == job_id, t.ledger.c.kind == LedgerKind.COMMIT)
        ).scalar()
        if charged is not None:
            day = quota.utc_day(row.created_at)
            session.execute(_RETURN_CHARGE, {"uid": row.user_id, "amount": int(charged), "job_day": day})
            quota.record_entry(session, row.user_id, job_id, LedgerKind.REFUND, int(charged), now, note="undeliverable")
    return True
