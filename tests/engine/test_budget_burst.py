"""A burst of jobs against daily budgets, rendered by several workers at once over one database: a backend's
spend passes its budget by no more than the jobs already in flight when it was reached, later jobs fail over
to the next backend, and once every budget is spent jobs fail uncharged and new ones are refused."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from engine.backend import Backend, GenerationResult, OutputImage, Progress
from engine.budget import BudgetGuard, Estimator, PerImage
from engine.capabilities import Capabilities, Range
from engine.dispatch import Dispatcher
from engine.events import ProgressHub
from engine.request import GenerationRequest
from engine.routing import Router
from engine.settings import DispatchSettings
from storage import budget, jobs
from storage.blobs import LocalBlobStore
from storage.budget import HoldOutcome
from storage.db import Database
from storage.settings import QueueSettings
from tests.conftest import StoreTarget
from tests.storage.ledger_helpers import credits_of, drift, new_user

WORKERS = 4
JOBS = 40
LIMITS = {"first": 1.0, "second": 0.5}
ESTIMATE = 0.10  # the documented price per image, for both
BILLED = {"first": 0.13, "second": 0.10}  # what the providers then bill: "first" costs more than documented


@dataclass
class Billed:
    """A provider that takes a moment per job and bills its own price."""

    name: str
    usd: float
    capabilities: Capabilities = field(
        default_factory=lambda: Capabilities(limits={"num_images": Range(1, 1, 1, integer=True)})
    )

    def unavailable_reason(self) -> str | None:
        return None

    async def generate(self, request: GenerationRequest, progress: Progress) -> GenerationResult:
        await asyncio.sleep(0.02)
        image = OutputImage(b"\x89PNG", "image/png", 8, 8)
        return GenerationResult((image,), seed="1", spend_usd=self.usd)


class Watched(BudgetGuard):
    """A worker's budget guard that notes, at every hold granted, how many jobs then held the backend's budget
    (the database's count, this one included): the jobs in flight when each started."""

    def __init__(self, db: Database, in_flight: dict[str, int]) -> None:
        super().__init__(db, LIMITS, Estimator({key: PerImage(ESTIMATE) for key in LIMITS}))
        self.in_flight = in_flight  # backend -> most jobs holding it at once, shared by the workers

    async def _note_thresholds(self, outcome: HoldOutcome) -> None:
        own = outcome.uses[0]
        if outcome.granted:
            held = round(own.held_usd / ESTIMATE)
            self.in_flight[own.budget] = max(self.in_flight.get(own.budget, 0), held)
        await super()._note_thresholds(outcome)


def _worker(db: Database, tmp_path: Path, name: str, in_flight: dict[str, int]) -> Dispatcher:
    """One worker process's engine: its own backends, router, budget guard and dispatcher, on the shared store."""
    settings = DispatchSettings(concurrency=4, default_backend_concurrency=4, poll_s=0.01)
    backends: dict[str, Backend] = {key: Billed(key, BILLED[key]) for key in ("first", "second")}
    router = Router(backends, list(backends), Dispatcher.breakers_for(list(backends), settings))
    router.budget = Watched(db, in_flight)
    return Dispatcher(
        db,
        LocalBlobStore(tmp_path / "blobs"),
        router,
        settings=settings,
        queue=QueueSettings(heartbeat_s=0.5, lease_s=30, running_cap=16),
        hub=ProgressHub(),
        worker_id=name,
    )


async def test_a_burst_keeps_to_the_budgets_fails_over_then_is_refused(
    store_target: StoreTarget, tmp_path: Path
) -> None:
    db = store_target.open(pool_size=WORKERS * 5)
    await db.upgrade()
    try:
        user = await new_user(db, credits=1000)
        for number in range(JOBS):
            await db.write(
                jobs.submit,
                job=jobs.NewJob(id=f"burst-{number}", user_id=user, params={"prompt": "p"}, cost=1,
                                route=["first", "second"]),
                now=1000.0,
                daily_jobs_default=1000,
            )  # fmt: skip
        in_flight: dict[str, int] = {}
        workers = [_worker(db, tmp_path, f"worker-{n}", in_flight) for n in range(WORKERS)]
        await asyncio.gather(*(worker.drain() for worker in workers))

        ended = [await db.read(jobs.get, job_id=f"burst-{number}") for number in range(JOBS)]
        by_backend = {key: [j for j in ended if j and j.state == "succeeded" and j.backend == key] for key in LIMITS}
        refused = [j for j in ended if j and j.state == "failed"]
        assert all(j.error == "over_budget" for j in refused)
        guard = workers[0].router.budget
        assert guard is not None
        uses = {use.budget: use for use in await guard.today(["first", "second"])}
        for key, limit in LIMITS.items():
            spent = uses[key].spent_usd
            overshoot = max(0.0, spent - limit)
            # Each job started within the budget by its estimate: only what the jobs then in flight billed over
            # their estimates can pass it.
            bound = in_flight.get(key, 0) * (BILLED[key] - ESTIMATE)
            print(
                f"{store_target.kind} {key}: {len(by_backend[key])} jobs, spent ${spent:.2f} of ${limit:.2f}, "
                f"over by ${overshoot:.2f} (bound ${bound:.2f}: {in_flight.get(key, 0)} in flight at most), "
                f"held now ${uses[key].held_usd:.2f}"
            )
            assert overshoot <= bound + 1e-9
            assert uses[key].held_usd == 0.0
        assert by_backend["first"] and by_backend["second"], "the burst failed over to the second backend"
        assert refused, "with both budgets spent the rest failed"
        print(f"{store_target.kind}: {len(refused)} of {JOBS} jobs refused uncharged")
        # Failed jobs cost nothing; succeeded ones once.
        assert await credits_of(db, user) == (1000 - len(by_backend["first"]) - len(by_backend["second"]), 0)
        assert await drift(db) == []
        # New jobs are refused before they are queued, until the UTC day turns.
        request = GenerationRequest(prompt="p", faces=(b"",))
        assert not await guard.open_for(["first", "second"], request)
        tomorrow, _ = await db.read(budget.usage, backend="first", now=1000.0 + 86_400 * 40_000)
        assert tomorrow.spent_usd == 0.0
    finally:
        await db.dispose()
