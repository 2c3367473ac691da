"""Cheap reads for the health and metrics server: a liveness probe and job counts for the gauges."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, literal, select
from sqlalchemy.engine import Connection

from storage import tables as t
from storage.jobs import DELIVERY_PENDING, QUEUED
from storage.states import JobState


@dataclass(frozen=True)
class JobCounts:
    by_state: dict[str, int] = field(default_factory=dict)  # every job ever, by its current state
    queue_depth: int = 0  # queued jobs, due or waiting out a retry backoff
    queue_due: int = 0  # queued jobs a worker could claim now
    oldest_queued_age_s: float = 0.0  # how long the longest-waiting queued job has waited
    deliveries_pending: int = 0  # finished jobs whose result has not reached the chat yet


def ping(*, session: Connection) -> bool:
    """True when the database answers a trivial query."""
    return bool(session.execute(select(literal(1))).scalar_one() == 1)


def job_counts(*, session: Connection, now: float) -> JobCounts:
    j = t.jobs.c
    # Grouping by state walks the (state, lease_until) index rather than the table.
    by_state = {
        str(state): int(count) for state, count in session.execute(select(j.state, func.count()).group_by(j.state))
    }
    for state in JobState:
        by_state.setdefault(str(state), 0)
    queued = session.execute(
        select(
            func.count(),
            func.count().filter(j.run_after <= now),
            func.min(j.created_at),
        ).where(QUEUED)
    ).one()
    pending = session.execute(select(func.count()).select_from(t.jobs).where(DELIVERY_PENDING)).scalar_one()
    oldest = queued[2]
    return JobCounts(
        by_state=by_state,
        queue_depth=int(queued[0]),
        queue_due=int(queued[1]),
        oldest_queued_age_s=0.0 if oldest is None else max(0.0, now - float(oldest)),
        deliveries_pending=int(pending),
    )


__all__ = ["JobCounts", "job_counts", "ping"]
