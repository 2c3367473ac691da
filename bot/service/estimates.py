"""How long until a queued job's result: the queue ahead of it, played out over the running slots with each
backend's median render time (of its latest jobs, as the store keeps them)."""

from __future__ import annotations

import heapq
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from storage.db import Database
from storage.estimates import QueueView, queue_view

DEFAULT_RENDER_S = 30.0  # a backend without measured render times, while others have some
MIN_REMAINING = 0.1  # a running job past its median still has this share of it to go


@dataclass(frozen=True)
class Place:
    job_id: str
    position: int  # 1-based, in claim order
    eta_s: float | None  # seconds from now until its result; None before any render time was measured


def median_times(view: QueueView) -> tuple[dict[str, float], float]:
    """Each backend's median render time, and the median over all of them (for backends without one)."""
    medians = {name: statistics.median(times) for name, times in view.times.items() if times}
    every = [seconds for times in view.times.values() for seconds in times]
    return medians, statistics.median(every) if every else DEFAULT_RENDER_S


def places(view: QueueView, now: float) -> list[Place]:
    """Each queued job's place and estimate: a job starts when the earliest of the running slots frees up
    (a running job is expected to take its backend's median), and holds it for its own backend's median.
    No estimate before any job has finished: the places alone."""
    medians, overall = median_times(view)
    measured = bool(medians)

    def median(backend: str | None) -> float:
        return medians.get(backend or "", overall)

    slots = []
    for backend, started in view.running:
        expected = median(backend)
        elapsed = max(0.0, now - started) if started is not None else 0.0
        slots.append(max(expected * MIN_REMAINING, expected - elapsed))
    heap = slots or [0.0]
    heapq.heapify(heap)
    found = []
    for position, (job_id, backend) in enumerate(view.queued, 1):
        finish = heapq.heappop(heap) + median(backend)
        heapq.heappush(heap, finish)
        found.append(Place(job_id, position, finish if measured else None))
    return found


class Estimates:
    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time) -> None:
        self.db, self.clock = db, clock

    async def queue(self, limit: int = 200) -> list[Place]:
        """The first ``limit`` queued jobs with their places and estimates."""
        view = await self.db.read(queue_view, limit=limit)
        return places(view, self.clock())

    async def eta(self, job_id: str) -> float | None:
        """Seconds until the job's result, while it is queued (among the first 200)."""
        return next((place.eta_s for place in await self.queue() if place.job_id == job_id), None)
