"""The ledger's fleet parts on both databases: claims filtered by the backends a worker serves, the worker
registry, and a stopping worker handing its job back."""

from __future__ import annotations

from storage import jobs, workers
from storage.db import Database
from storage.states import JobState
from tests.storage.ledger_helpers import credits_of, drift, new_user


async def _queue(db: Database, job_id: str, user: int, route: list[str], *, pinned: bool = False, **kw: float) -> None:
    await db.write(
        jobs.submit,
        job=jobs.NewJob(id=job_id, user_id=user, params={"prompt": "p"}, cost=1, route=route, pinned=pinned, **kw),  # type: ignore[arg-type]
        now=1000.0,
        daily_jobs_default=100,
    )


async def _claim(db: Database, serves: list[str] | None, worker: str = "w") -> str | None:
    job = await db.write_lossy(jobs.claim, worker=worker, lease_s=30, running_cap=100, now=1000.0, serves=serves)
    return None if job is None else job.id


async def test_a_worker_claims_only_jobs_a_backend_it_serves_can_render(db: Database) -> None:
    user = await new_user(db)
    await _queue(db, "local-only", user, ["local"])
    await _queue(db, "local-then-fal", user, ["local", "fal-flux-pulid"])
    await _queue(db, "pinned-local", user, ["local", "fal-flux-pulid"], pinned=True)
    await _queue(db, "fal-pulid", user, ["fal-pulid"])  # a name that contains another's must not match it
    await _queue(db, "any", user, [])

    got = {await _claim(db, ["fal-flux-pulid"], "cpu") for _ in range(4)}
    assert got == {"local-then-fal", "any", None}
    got = {await _claim(db, ["local"], "gpu") for _ in range(4)}
    assert got == {"local-only", "pinned-local", None}
    assert await _claim(db, ["fal-flux-pulid", "local"]) is None
    assert await _claim(db, None) == "fal-pulid"  # no filter: any job


async def test_registry_lists_live_workers_and_expires_silent_ones(db: Database) -> None:
    gpu = workers.WorkerInfo("gpu-1", "host-a", 11, "0.1.0", {"local": 1}, "NVIDIA H100", 81559, started_at=900.0)
    cpu = workers.WorkerInfo("cpu-1", "host-b", 12, "0.1.0", {"fal-flux-pulid": 8}, started_at=950.0)
    await db.write(workers.beat, worker=gpu, now=1000.0, ttl_s=30)
    await db.write(workers.beat, worker=cpu, now=1010.0, ttl_s=30)
    live = await db.read(workers.live, now=1010.0, ttl_s=30)
    assert [w.id for w in live] == ["gpu-1", "cpu-1"]
    assert live[0].gpu_name == "NVIDIA H100" and live[0].gpu_memory_mb == 81559 and live[0].last_seen == 1000.0
    assert workers.served(live) == {"local": 1, "fal-flux-pulid": 8}

    # A later beat changes what it serves; a draining worker serves nothing new.
    await db.write(
        workers.beat,
        worker=workers.WorkerInfo("cpu-1", "host-b", 12, "0.1.0", {"fal-flux-pulid": 3}),
        now=1020.0,
        ttl_s=30,
    )
    draining = workers.WorkerInfo("gpu-1", "host-a", 11, "0.1.0", {"local": 0}, draining=True)
    await db.write(workers.beat, worker=draining, now=1020.0, ttl_s=30)
    live = await db.read(workers.live, now=1020.0, ttl_s=30)
    assert workers.served(live) == {"fal-flux-pulid": 3}
    assert live[0].gpu_name == "NVIDIA H100"  # kept from the first beat

    # gpu-1 goes silent: past the TTL it is no longer live, and the next beat of anyone deletes its row.
    await db.write(workers.beat, worker=cpu, now=1055.0, ttl_s=30)
    assert [w.id for w in await db.read(workers.live, now=1055.0, ttl_s=1000)] == ["cpu-1"]
    assert await db.write(workers.remove, worker_id="cpu-1") is True
    assert await db.read(workers.live, now=1055.0, ttl_s=30) == []


async def test_a_released_job_is_queued_again_uncharged_and_keeps_its_tries(db: Database) -> None:
    user = await new_user(db, credits=5)
    await _queue(db, "j", user, ["fal-flux-pulid"])
    claimed = await db.write_lossy(jobs.claim, worker="w", lease_s=30, running_cap=1, now=1000.0)
    assert claimed is not None and claimed.attempt == 1
    assert await db.write(jobs.release, job_id="j", attempt=1, now=1001.0) is True
    assert await db.write(jobs.release, job_id="j", attempt=1, now=1001.0) is False
    job = await db.read(jobs.get, job_id="j")
    assert job is not None and job.state == JobState.QUEUED and job.max_attempts == 4 and job.lease_owner is None
    assert await credits_of(db, user) == (5, 1)
    # Its owner's running slot came back: with a cap of 1 it can be claimed again at once.
    again = await db.write_lossy(jobs.claim, worker="w2", lease_s=30, running_cap=1, now=1002.0)
    assert again is not None and again.id == "j" and again.attempt == 2
    assert await drift(db) == []
