"""Read-only counts for operators, the health probe and the metrics gauges: jobs by state, spend, queue depth."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, literal, select
from sqlalchemy.engine import Connection

from storage import tables as t
from storage import workers
from storage.states import JobState
from storage.workers import WorkerInfo

_j = t.jobs.c


@dataclass(frozen=True)
class Stats:
    """The operator's summary of jobs created since a moment (``admin stats``)."""

    since: float
    by_state: dict[str, int] = field(default_factory=dict)  # jobs created since ``since``
    spend_by_backend: dict[str, float] = field(default_factory=dict)
    queue_depth: int = 0
    running: int = 0
    users: int = 0
    # Delivered outputs the face judge scored, per backend: (how many, mean score 0-1).
    likeness_by_backend: dict[str, tuple[int, float]] = field(default_factory=dict)
    likeness_retries: dict[str, int] = field(default_factory=dict)  # free re-renders per backend

    @property
    def total(self) -> int:
        return sum(self.by_state.values())

    @property
    def success_rate(self) -> float | None:
        finished = sum(self.by_state.get(s, 0) for s in (JobState.SUCCEEDED, JobState.FAILED))
        return None if finished == 0 else self.by_state.get(JobState.SUCCEEDED, 0) / finished


@dataclass(frozen=True)
class JobCounts:
    """Job counts over the whole table, for the metrics gauges."""

    by_state: dict[str, int] = field(default_factory=dict)  # every job ever, by its current state
    queue_depth: int = 0  # queued jobs, due or waiting out a retry backoff
    queue_due: int = 0  # queued jobs a worker could claim now
    oldest_queued_age_s: float = 0.0  # how long the longest-waiting queued job has waited
    deliveries_pending: int = 0  # finished jobs whose result has not reached the chat yet
    workers: list[WorkerInfo] = field(default_factory=list)  # live workers, as they last reported


def collect(*, session: Connection, since: float) -> Stats:
    by_state = {
        str(state): int(count)
        for state, count in session.execute(
            select(_j.state, func.count()).where(_j.created_at >= since).group_by(_j.state)
        )
    }
    spend = {
        str(backend): float(total)
        for backend, total in session.execute(
            select(_j.backend, func.sum(_j.spend_usd))
            .where(_j.created_at >= since, _j.backend.isnot(None))
            .group_by(_j.backend)
        )
    }
    live = dict(
        (str(state), int(count))
        for state, count in session.execute(
            select(_j.state, func.count()).where(_j.state.in_([JobState.QUEUED, JobState.RUNNING])).group_by(_j.state)
        )
    )
    users = session.execute(select(func.count()).select_from(t.users)).scalar_one()
    _i, _e = t.images.c, t.job_events.c
    likeness = {
        str(backend): (int(count), float(mean))
        for backend, count, mean in session.execute(
            select(_j.backend, func.count(), func.avg(_i.likeness))
            .join(t.images, _i.job_id == _j.id)
            .where(_j.created_at >= since, _j.backend.isnot(None), _i.likeness.isnot(None))
            .group_by(_j.backend)
        )
    }
    retries = {
        str(backend): int(count)
        for backend, count in session.execute(
            select(_j.backend, func.count())
            .join(t.job_events, _e.job_id == _j.id)
            .where(_j.created_at >= since, _j.backend.isnot(None), _e.kind == "likeness_retry")
            .group_by(_j.backend)
        )
    }
    return Stats(
        since=since,
        by_state=by_state,
        spend_by_backend=spend,
        queue_depth=live.get(JobState.QUEUED, 0),
        running=live.get(JobState.RUNNING, 0),
        users=int(users),
        likeness_by_backend=likeness,
        likeness_retries=retries,
    )


def ping(*, session: Connection) -> bool:
    """True when the database answers a trivial query."""
    return bool(session.execute(select(literal(1))).scalar_one() == 1)


def job_counts(*, session: Connection, now: float, worker_ttl_s: float = 30.0) -> JobCounts:
    # Grouping by state walks the (state, lease_until) index rather than the table.
    by_state = {
        str(state): int(count) for state, count in session.execute(select(_j.state, func.count()).group_by(_j.state))
    }
    for state in JobState:
        by_state.setdefault(str(state), 0)
    queued = session.execute(
        select(
            func.count(),
            func.count().filter(_j.run_after <= now),
            func.min(_j.created_at),
        ).where(t.QUEUED)
    ).one()
    pending = session.execute(select(func.count()).select_from(t.jobs).where(t.DELIVERY_PENDING)).scalar_one()
    oldest = queued[2]
    return JobCounts(
        by_state=by_state,
        queue_depth=int(queued[0]),
        queue_due=int(queued[1]),
        oldest_queued_age_s=0.0 if oldest is None else max(0.0, now - float(oldest)),
        deliveries_pending=int(pending),
        workers=workers.live(session=session, now=now, ttl_s=worker_ttl_s),
    )
