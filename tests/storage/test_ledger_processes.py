"""The ledger under real processes: concurrent claimers, a SIGKILLed worker, a paused one."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections import Counter

import pytest

from storage import jobs
from storage.db import Database
from storage.states import JobState
from tests.conftest import StoreTarget
from tests.storage.ledger_helpers import credits_of, drift, new_user

pytestmark = pytest.mark.slow


async def spawn(target: StoreTarget, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.storage.claimer",
        *args,
        env={**os.environ, **target.env()},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def bulk_submit(db: Database, count: int, users: int) -> None:
    owners = [await new_user(db, credits=count) for _ in range(users)]
    for i in range(count):
        await db.write(
            jobs.submit,
            job=jobs.NewJob(id=f"bulk-{i}", user_id=owners[i % users], params={}, cost=1),
            now=time.time() - 1,
            daily_jobs_default=count,
        )


@pytest.mark.timeout(300)
async def test_four_processes_claim_two_thousand_jobs_once_each(db: Database, store_target: StoreTarget) -> None:
    await bulk_submit(db, 2000, users=40)
    workers = [await spawn(store_target, "drain", "--tasks", "8") for _ in range(4)]
    outputs = await asyncio.gather(*(w.communicate() for w in workers))
    lines = [line for out, _ in outputs for line in out.decode().split()]
    errors = [line for out, _ in outputs for line in out.decode().splitlines() if line.startswith("ERROR")]
    assert errors == []
    assert all(w.returncode == 0 for w in workers), [err.decode()[-2000:] for _, err in outputs]
    counts = Counter(lines)
    assert len(counts) == 2000
    assert max(counts.values()) == 1  # zero duplicate claims
    assert not any("locked" in err.decode() for _, err in outputs)
    assert await drift(db) == []


async def test_sigkilled_worker_job_reruns_after_lease_and_charges_once(
    db: Database, store_target: StoreTarget
) -> None:
    user = await new_user(db, credits=5)
    await db.write(
        jobs.submit,
        job=jobs.NewJob(id="victim", user_id=user, params={}, cost=1),
        now=time.time() - 1,
        daily_jobs_default=10,
    )
    worker = await spawn(store_target, "hold", "--lease", "1")
    assert worker.stdout is not None
    line = (await asyncio.wait_for(worker.stdout.readline(), 30)).decode().split()
    assert line[:3] == ["claimed", "victim", "1"]
    worker.send_signal(signal.SIGKILL)
    await worker.wait()
    assert await db.write(jobs.expire_leases, now=time.time()) == []  # lease still valid
    await asyncio.sleep(1.2)
    assert await db.write(jobs.expire_leases, now=time.time()) == ["victim"]
    rerun = await db.write(jobs.claim, worker="survivor", lease_s=30, running_cap=2, now=time.time())
    assert rerun is not None and rerun.id == "victim" and rerun.attempt == 2
    assert await db.write(jobs.complete, job_id="victim", attempt=2, images=[], now=time.time())
    assert await credits_of(db, user) == (4, 0)
    assert await drift(db) == []


async def test_paused_worker_completion_is_rejected_after_takeover(db: Database, store_target: StoreTarget) -> None:
    user = await new_user(db, credits=5)
    await db.write(
        jobs.submit,
        job=jobs.NewJob(id="zombie", user_id=user, params={}, cost=1),
        now=time.time() - 1,
        daily_jobs_default=10,
    )
    worker = await spawn(store_target, "hold", "--lease", "1")
    assert worker.stdout is not None and worker.stdin is not None
    assert (await asyncio.wait_for(worker.stdout.readline(), 30)).decode().startswith("claimed zombie 1")
    worker.send_signal(signal.SIGSTOP)
    await asyncio.sleep(1.2)
    assert await db.write(jobs.expire_leases, now=time.time()) == ["zombie"]
    taken = await db.write(jobs.claim, worker="other", lease_s=30, running_cap=2, now=time.time())
    assert taken is not None and taken.attempt == 2
    assert await db.write(jobs.complete, job_id="zombie", attempt=2, images=[], now=time.time())
    worker.send_signal(signal.SIGCONT)
    worker.stdin.write(b"go\n")
    await worker.stdin.drain()
    verdict = (await asyncio.wait_for(worker.stdout.readline(), 30)).decode().strip()
    await worker.wait()
    assert verdict == "rejected"
    job = await db.read(jobs.get, job_id="zombie")
    assert job is not None and job.state == JobState.SUCCEEDED and job.attempt == 2
    assert await credits_of(db, user) == (4, 0)
