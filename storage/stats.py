"""Aggregates for operators: jobs by state, spend per backend, queue depth."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from storage import tables as t
from storage.states import JobState


@dataclass(frozen=True)
class Stats:
    since: float
    by_state: dict[str, int] = field(default_factory=dict)  # jobs created since ``since``
    spend_by_backend: dict[str, float] = field(default_factory=dict)
    queue_depth: int = 0
    running: int = 0
    users: int = 0

    @property
    def total(self) -> int:
        return sum(self.by_state.values())

    @property
    def success_rate(self) -> float | None:
        finished = sum(self.by_state.get(s, 0) for s in (JobState.SUCCEEDED, JobState.FAILED))
        return None if finished == 0 else self.by_state.get(JobState.SUCCEEDED, 0) / finished


def collect(*, session: Connection, since: float) -> Stats:
    j = t.jobs.c
    by_state = {
        str(state): int(count)
        for state, count in session.execute(
            select(j.state, func.count()).where(j.created_at >= since).group_by(j.state)
        )
    }
    spend = {
        str(backend): float(total)
        for backend, total in session.execute(
            select(j.backend, func.sum(j.spend_usd))
            .where(j.created_at >= since, j.backend.isnot(None))
            .group_by(j.backend)
        )
    }
    live = dict(
        (str(state), int(count))
        for state, count in session.execute(
            select(j.state, func.count()).where(j.state.in_([JobState.QUEUED, JobState.RUNNING])).group_by(j.state)
        )
    )
    users = (session.execute(select(func.count()).select_from(t.users))).scalar_one()
    return Stats(
        since=since,
        by_state=by_state,
        spend_by_backend=spend,
        queue_depth=live.get(JobState.QUEUED, 0),
        running=live.get(JobState.RUNNING, 0),
        users=int(users),
    )
