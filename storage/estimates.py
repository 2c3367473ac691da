"""What a queue estimate reads: the queue in claim order, the running jobs, and recent render times."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.engine import Connection

from storage import tables as t
from storage.states import JobState

_j = t.jobs.c


@dataclass(frozen=True)
class QueueView:
    queued: list[tuple[str, str | None]] = field(default_factory=list)  # job id, first backend of its route
    running: list[tuple[str | None, float | None]] = field(default_factory=list)  # backend, started at
    times: dict[str, list[float]] = field(default_factory=dict)  # latest render seconds per backend, newest first


def render_times(*, session: Connection, backend: str, limit: int) -> list[float]:
    """Seconds from start to result of the backend's latest succeeded jobs, newest first."""
    rows = session.execute(
        select(_j.finished_at - _j.started_at)
        .where(
            _j.backend == backend,
            _j.state == JobState.SUCCEEDED,
            _j.started_at.is_not(None),
            _j.finished_at.is_not(None),
        )
        .order_by(_j.finished_at.desc())
        .limit(limit)
    )
    return [max(0.0, float(seconds)) for (seconds,) in rows]


def queue_view(*, session: Connection, limit: int = 200, samples: int = 20) -> QueueView:
    """The first ``limit`` queued jobs in claim order, every running job, and up to ``samples`` recent
    render times of each backend they use."""
    queued = [
        (str(job_id), str(route[0]) if route else None)
        for job_id, route in session.execute(
            select(_j.id, _j.route)
            .where(_j.state == JobState.QUEUED)
            .order_by(_j.fair_key, _j.created_at, _j.id)
            .limit(limit)
        )
    ]
    running = [
        (backend or (str(route[0]) if route else None), started)
        for backend, route, started in session.execute(
            select(_j.backend, _j.route, _j.started_at).where(_j.state == JobState.RUNNING)
        )
    ]
    backends = {name for _, name in queued if name} | {name for name, _ in running if name}
    times = {name: render_times(session=session, backend=name, limit=samples) for name in sorted(backends)}
    return QueueView(queued, running, times)
