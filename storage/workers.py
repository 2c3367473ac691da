"""The worker registry: each rendering process keeps a row saying what it serves; rows of dead ones expire."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.engine import Connection

from storage import tables as t

_w = t.workers.c


@dataclass(frozen=True)
class WorkerInfo:
    """One worker as it last reported itself."""

    id: str
    host: str
    pid: int
    version: str
    backends: dict[str, int] = field(default_factory=dict)  # backend it can serve now -> free slots
    gpu_name: str | None = None
    gpu_memory_mb: int | None = None
    draining: bool = False
    started_at: float = 0.0
    last_seen: float = 0.0


def beat(*, session: Connection, worker: WorkerInfo, now: float, ttl_s: float) -> None:
    """Write this worker's row as of ``now`` and drop the rows of workers silent for ``ttl_s``."""
    values: dict[str, Any] = {
        "id": worker.id,
        "host": worker.host,
        "pid": worker.pid,
        "version": worker.version,
        "backends": dict(worker.backends),
        "gpu_name": worker.gpu_name,
        "gpu_memory_mb": worker.gpu_memory_mb,
        "draining": worker.draining,
        "started_at": worker.started_at,
        "last_seen": now,
    }
    insert = t.upsert_insert(session, t.workers).values(**values)
    changing = {name: insert.excluded[name] for name in ("backends", "draining", "last_seen", "version")}
    session.execute(insert.on_conflict_do_update(index_elements=["id"], set_=changing))
    session.execute(delete(t.workers).where(_w.last_seen < now - ttl_s))


def remove(*, session: Connection, worker_id: str) -> bool:
    """A worker that stops cleanly takes its row with it."""
    return bool(session.execute(delete(t.workers).where(_w.id == worker_id)).rowcount == 1)


def live(*, session: Connection, now: float, ttl_s: float) -> list[WorkerInfo]:
    """Workers heard from within ``ttl_s``, oldest first."""
    rows = session.execute(select(t.workers).where(_w.last_seen >= now - ttl_s).order_by(_w.started_at, _w.id))
    return [WorkerInfo(**dict(row._mapping)) for row in rows]


def served(workers: list[WorkerInfo]) -> dict[str, int]:
    """Backend -> free slots summed over the workers that are not draining."""
    total: dict[str, int] = {}
    for worker in workers:
        if worker.draining:
            continue
        for name, free in worker.backends.items():
            total[name] = total.get(name, 0) + max(0, int(free))
    return total
