"""Delivery bookkeeping: where a job's result goes, which finished jobs still owe a reply, and whether it arrived."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from storage import tables as t
from storage.jobs import to_job
from storage.models import Job
from storage.states import DeliveryState

_j, _u = t.jobs.c, t.users.c


def set_reply_target(*, session: Connection, job_id: str, reply_target: dict[str, Any], now: float) -> None:
    session.execute(update(t.jobs).where(_j.id == job_id).values(reply_target=reply_target, updated_at=now))


def pending_deliveries(*, session: Connection, platforms: Sequence[str], limit: int = 50) -> list[Job]:
    """Finished jobs of users on these platforms whose result has not reached the chat, oldest first."""
    rows = session.execute(
        select(t.jobs)
        .join(t.users, _u.id == _j.user_id)
        .where(t.DELIVERY_PENDING, _u.platform.in_(list(platforms)))
        .order_by(_j.finished_at)
        .limit(limit)
    )
    return [to_job(row) for row in rows]


def mark_delivery(*, session: Connection, job_id: str, state: DeliveryState, path: str | None, now: float) -> bool:
    """pending → delivered or undeliverable, once."""
    result = session.execute(
        update(t.jobs)
        .where(_j.id == job_id, _j.delivery_state == DeliveryState.PENDING)
        .values(delivery_state=state, delivery_path=path, updated_at=now)
    )
    return bool(result.rowcount == 1)


def count_delivery_attempt(*, session: Connection, job_id: str, now: float) -> int:
    """One more try to deliver; returns how many there have been."""
    row = session.execute(
        update(t.jobs)
        .where(_j.id == job_id)
        .values(delivery_attempts=_j.delivery_attempts + 1, updated_at=now)
        .returning(_j.delivery_attempts)
    ).first()
    return 0 if row is None else int(row.delivery_attempts)
