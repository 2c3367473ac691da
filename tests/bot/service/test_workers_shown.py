"""The fleet seen from the bot: jobs routed to what live workers serve (or waiting for one, and saying so);
`admin stats` lists the workers, /metrics counts them and their free slots."""

from __future__ import annotations

import time

from prometheus_client import generate_latest

from bot import messages
from bot.service.imagine import ImagineInput
from bot.service.use_cases import LikenessService
from engine.fleet import FleetView
from engine.metrics import Metrics
from engine.routing import Router
from storage import jobs, stats, workers
from storage.workers import WorkerInfo
from tests.bot.service.conftest import ADMIN, ANN, ChatTarget, World, face_photo

GPU = WorkerInfo("gpu-host:7:abc", "gpu-host", 7, "0.1.0", {"local": 1}, "NVIDIA H200", 143771, started_at=1.0)
CPU = WorkerInfo("cpu-host:8:def", "cpu-host", 8, "0.1.0", {"fal-flux-pulid": 8, "fal-pulid": 8}, started_at=2.0)
GONE = WorkerInfo("old-host:9:fff", "old-host", 9, "0.0.9", {"local": 1}, started_at=0.5)


async def _register(world: World, now: float) -> None:
    await world.db.write(workers.beat, worker=GONE, now=now - 600, ttl_s=3600)
    for worker in (GPU, CPU):
        await world.db.write(workers.beat, worker=worker, now=now, ttl_s=3600)


async def test_admin_stats_lists_live_workers_with_what_they_serve(world: World) -> None:
    now = time.time()
    text = await world.service.admin.stats(ADMIN)
    assert "Workers: none up" in text
    await _register(world, now)
    text = await world.service.admin.stats(ADMIN)
    assert "Workers: 2" in text
    assert "gpu-host pid 7 v0.1.0: local (1 free), GPU NVIDIA H200 143771 MiB" in text
    assert "cpu-host pid 8 v0.1.0: fal-flux-pulid (8 free), fal-pulid (8 free)" in text
    assert "old-host" not in text  # silent for longer than three heartbeats


async def test_metrics_count_workers_and_free_slots_per_backend(world: World) -> None:
    now = time.time()
    await _register(world, now)
    metrics = Metrics()
    metrics.observe_jobs(await world.db.read(stats.job_counts, now=now, worker_ttl_s=30))
    page = generate_latest(metrics.registry).decode()
    assert 'likeness_workers{state="serving"} 2.0' in page
    assert 'likeness_workers{state="draining"} 0.0' in page
    assert 'likeness_backend_free_slots{backend="local"} 1.0' in page
    assert 'likeness_backend_free_slots{backend="fal-flux-pulid"} 8.0' in page
    assert 'gpu="NVIDIA H200",gpu_memory_mb="143771",host="gpu-host"' in page


async def test_a_front_end_without_an_engine_queues_for_the_worker_that_serves_it(world: World) -> None:
    """The bot renders nothing itself: a job waits, and says so, until a worker serving its backend is up."""
    fleet = FleetView(world.db, ttl_s=30, refresh_s=0)
    router = Router({}, ["local", "fal-flux-pulid"], {}, fleet=fleet)
    service = LikenessService(db=world.db, blobs=world.blobs, router=router, settings=world.settings)
    target = ChatTarget("c1")

    waiting = await service.imagine.submit(ANN, ImagineInput("e1", "a knight", target, photos=(face_photo(),)))
    assert waiting.reply.text == messages.waiting_for_worker(1)
    job = await world.db.read(jobs.get, job_id="e1")
    assert job is not None and job.route == ["local", "fal-flux-pulid"]

    await world.db.write(workers.beat, worker=GPU, now=time.time(), ttl_s=30)
    queued = await service.imagine.submit(ANN, ImagineInput("e2", "a knight", target, photos=(face_photo(),)))
    assert queued.reply.text == messages.queued(2)
    job = await world.db.read(jobs.get, job_id="e2")
    assert job is not None and job.route == ["local"]  # kept: a GPU worker serves it, though not this process
