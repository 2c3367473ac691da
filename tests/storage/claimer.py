"""A worker process for the ledger's multi-process tests: claims jobs and reports what it did.

Modes:
- ``drain``: N tasks claim and complete until the queue is empty; prints every claimed job id.
- ``hold``: claims one job, prints its id, then waits for a line on stdin before completing it and
  prints whether the completion was accepted (a killed or paused worker never gets that far).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

from storage import jobs
from storage.db import Database


async def drain(db: Database, tasks: int, worker: str) -> None:
    claimed: list[str] = []
    errors: list[str] = []

    async def loop() -> None:
        while True:
            try:
                job = await db.write(jobs.claim, worker=worker, lease_s=60, running_cap=10_000, now=time.time())
                if job is None:
                    return
                await db.write(jobs.complete, job_id=job.id, attempt=job.attempt, images=[], now=time.time())
                claimed.append(job.id)
            except Exception as exc:  # reported to the parent, which fails the test
                errors.append(repr(exc))
                return

    await asyncio.gather(*(loop() for _ in range(tasks)))
    for job_id in claimed:
        print(job_id)
    for error in errors:
        print("ERROR", error)


async def hold(db: Database, worker: str, lease_s: float) -> None:
    job = await db.write(jobs.claim, worker=worker, lease_s=lease_s, running_cap=10, now=time.time())
    assert job is not None
    print("claimed", job.id, job.attempt, flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    accepted = await db.write(jobs.complete, job_id=job.id, attempt=job.attempt, images=[], now=time.time())
    print("accepted" if accepted else "rejected", flush=True)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["drain", "hold"])
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--lease", type=float, default=2.0)
    args = parser.parse_args()
    db = Database(os.environ["LIKENESS_DATABASE_URL"], schema=os.environ.get("LIKENESS_DATABASE_SCHEMA"))
    worker = f"pid-{os.getpid()}"
    try:
        if args.mode == "drain":
            await drain(db, args.tasks, worker)
        else:
            await hold(db, worker, args.lease)
    finally:
        await db.dispose()


if __name__ == "__main__":
    asyncio.run(main())
