"""The fleet on one machine: routes planned against the workers that are up, a dispatcher's row in the worker
registry, claims kept to what it serves, and a drain that hands unfinished jobs back uncharged."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from engine.backend import GenerationResult, Progress
from engine.dispatch import Dispatcher
from engine.events import ProgressHub
from engine.fleet import FleetView, Registration
from engine.request import GenerationRequest
from engine.routing import Plan, Refusal, Router
from engine.settings import DispatchSettings
from storage import jobs, workers
from storage.blobs import LocalBlobStore
from storage.db import Database
from storage.settings import QueueSettings
from storage.states import JobState
from tests.engine.scripted_backend import ScriptedBackend
from tests.storage.ledger_helpers import credits_of, drift, new_user

REQUEST = GenerationRequest(prompt="a portrait", faces=(b"",))


class Fleet(FleetView):
    """The registry as a front end reads it, given by the test."""

    def __init__(self, *served: str) -> None:
        self.up = frozenset(served)

    async def served(self) -> frozenset[str]:
        return self.up


def _router(route: list[str], *served: str, here: dict[str, ScriptedBackend] | None = None) -> Router:
    backends = dict(here or {})
    return Router(backends, route, Dispatcher.breakers_for(list(backends), DispatchSettings()), fleet=Fleet(*served))  # type: ignore[arg-type]


async def test_a_front_end_without_an_engine_keeps_local_while_a_gpu_worker_is_up() -> None:
    plan = await _router(["local", "fal-flux-pulid"], "local").plan(REQUEST)
    assert plan == Plan(("local",))
    plan = await _router(["local", "fal-flux-pulid"], "local", "fal-flux-pulid").plan(REQUEST)
    assert plan == Plan(("local", "fal-flux-pulid"))
    # No route set: whatever live workers serve, in the catalogue's order.
    assert await _router([], "local", "fal-pulid").plan(REQUEST) == Plan(("fal-pulid", "local"))


async def test_with_no_worker_up_the_job_waits_for_the_backends_that_fit_it() -> None:
    assert await _router(["local"]).plan(REQUEST) == Plan(("local",), waiting=True)
    # fal-flux-pulid renders one image per job, the local engine up to four: only the local engine fits.
    two = GenerationRequest(prompt="p", faces=(b"",), num_images=2)
    assert await _router(["fal-flux-pulid", "local"]).plan(two) == Plan(("local",), waiting=True)
    assert await _router([]).plan(REQUEST) == Plan((), waiting=True)


async def test_settings_no_live_backend_allows_are_refused_with_its_ranges() -> None:
    two = GenerationRequest(prompt="p", faces=(b"",), num_images=2)
    refused = await _router(["fal-flux-pulid", "local"], "fal-flux-pulid").plan(two)
    assert isinstance(refused, Refusal) and [p.parameter for p in refused.problems] == ["num_images"]


async def _dispatcher(
    db: Database, tmp_path: Path, backend: ScriptedBackend, name: str, **settings: float
) -> Dispatcher:
    dispatch = DispatchSettings(poll_s=0.05, **settings)  # type: ignore[arg-type]
    router = Router({backend.name: backend}, [backend.name], Dispatcher.breakers_for([backend.name], dispatch))
    dispatcher = Dispatcher(
        db,
        LocalBlobStore(tmp_path / "blobs"),
        router,
        settings=dispatch,
        queue=QueueSettings(heartbeat_s=0.1, lease_s=5),
        hub=ProgressHub(),
        worker_id=name,
    )
    dispatcher.registration = Registration(db, worker_id=name, serving=dispatcher.serving, ttl_s=0.3)
    return dispatcher


async def _submit(db: Database, job_id: str, user: int, route: list[str]) -> None:
    await db.write(
        jobs.submit,
        job=jobs.NewJob(id=job_id, user_id=user, params=REQUEST.to_params(), cost=1, route=route, deadline_s=600),
        now=time.time(),
        daily_jobs_default=100,
    )


async def _until(check: object, within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while not await check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_a_registered_dispatcher_says_what_it_serves_claims_only_that_and_leaves_on_stop(
    db: Database, tmp_path: Path
) -> None:
    user = await new_user(db, credits=5)
    await _submit(db, "for-local", user, ["local"])
    await _submit(db, "for-scripted", user, ["scripted"])
    dispatcher = await _dispatcher(db, tmp_path, ScriptedBackend(), "cpu-1", concurrency=4)
    stop = asyncio.Event()
    running = asyncio.create_task(dispatcher.run(stop))

    async def registered() -> bool:
        live = await db.read(workers.live, now=time.time(), ttl_s=5)
        return [(w.id, w.backends) for w in live] == [("cpu-1", {"scripted": 4})]

    async def rendered() -> bool:
        job = await db.read(jobs.get, job_id="for-scripted")
        return job is not None and job.state == JobState.SUCCEEDED

    await _until(registered)
    await _until(rendered)
    await asyncio.sleep(0.2)  # several more claim polls
    waiting = await db.read(jobs.get, job_id="for-local")
    assert waiting is not None and waiting.state == JobState.QUEUED and waiting.attempt == 0
    stop.set()
    await running
    assert await db.read(workers.live, now=time.time(), ttl_s=5) == []


class Slow(ScriptedBackend):
    """A provider request that takes ``seconds`` to finish."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.started = 0

    async def generate(self, request: GenerationRequest, progress: Progress) -> GenerationResult:
        self.started += 1
        result = await super().generate(request, progress)  # submitted (or resumed) at once
        await asyncio.sleep(self.seconds)  # then the provider takes its time
        return result


async def test_a_drain_hands_a_job_still_running_after_the_grace_back_uncharged(db: Database, tmp_path: Path) -> None:
    user = await new_user(db, credits=5)
    await _submit(db, "slow", user, ["scripted"])
    backend = Slow(seconds=30)
    dispatcher = await _dispatcher(db, tmp_path, backend, "draining")
    stop = asyncio.Event()
    running = asyncio.create_task(dispatcher.run(stop, drain_s=0.3))
    await _until(lambda: asyncio.sleep(0, backend.started == 1))
    stop.set()
    started = time.monotonic()
    await running
    assert time.monotonic() - started < 5
    job = await db.read(jobs.get, job_id="slow")
    assert job is not None and job.state == JobState.QUEUED and job.lease_owner is None
    assert await credits_of(db, user) == (5, 1)  # still reserved, nothing charged
    assert await drift(db) == []

    # The next worker finishes it quickly; it resumes the request the first one submitted.
    backend.seconds = 0
    again = await _dispatcher(db, tmp_path, backend, "next")
    stop = asyncio.Event()
    running = asyncio.create_task(again.run(stop, drain_s=5))

    async def done() -> bool:
        job = await db.read(jobs.get, job_id="slow")
        return job is not None and job.state == JobState.SUCCEEDED

    await _until(done)
    stop.set()
    await running
    assert backend.submitted == ["scripted-1"] and backend.resumed == ["scripted-1"]
    assert await credits_of(db, user) == (4, 0)
    assert await drift(db) == []


async def test_a_drain_lets_a_job_that_finishes_within_the_grace_finish(db: Database, tmp_path: Path) -> None:
    user = await new_user(db, credits=5)
    await _submit(db, "quick", user, ["scripted"])
    backend = Slow(seconds=0.5)
    dispatcher = await _dispatcher(db, tmp_path, backend, "draining")
    stop = asyncio.Event()
    running = asyncio.create_task(dispatcher.run(stop, drain_s=10))
    await _until(lambda: asyncio.sleep(0, backend.started == 1))
    stop.set()
    await running
    job = await db.read(jobs.get, job_id="quick")
    assert job is not None and job.state == JobState.SUCCEEDED
    assert await credits_of(db, user) == (4, 0)
