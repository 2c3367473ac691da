"""Dispatch overhead: 1,000 jobs through ledger → dispatcher → an instant backend, 50 in flight.

Reports throughput, the per-job time the service adds (claim to completion, the backend taking ~0),
and resident memory after a warm-up batch and after the measured batches (growth per job).
Usage: python -m benchmarks.dispatch [--jobs N] [--in-flight N] [--postgres URL]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import psutil

from benchmarks.instant import InstantBackend
from engine.dispatch import Dispatcher
from engine.events import JobProgress, ProgressHub, ProgressKind
from engine.routing import Router
from engine.settings import DispatchSettings
from storage import jobs
from storage.blobs import LocalBlobStore
from storage.db import Database
from storage.settings import QueueSettings
from storage.users import ensure_user

EXTRA_BATCHES = 8


async def run_batch(
    db: Database, dispatcher: Dispatcher, hub: ProgressHub, users: list[int], face: str, n: int, tag: str
) -> tuple[float, list[float]]:
    started: dict[str, float] = {}
    overhead: list[float] = []

    def listen(event: JobProgress) -> None:
        if event.kind is ProgressKind.STARTED:
            started[event.job_id] = time.perf_counter()
        elif event.kind is ProgressKind.FINISHED and event.job_id in started:
            overhead.append(time.perf_counter() - started.pop(event.job_id))

    unsubscribe = hub.subscribe(listen)
    for i in range(n):
        await db.write(
            jobs.submit,
            job=jobs.NewJob(
                id=f"{tag}-{i}", user_id=users[i % len(users)], params={"prompt": "p"}, cost=1, face_keys=[face]
            ),
            now=time.time(),
            daily_jobs_default=10**9,
        )
    begin = time.perf_counter()
    await dispatcher.drain()
    elapsed = time.perf_counter() - begin
    unsubscribe()
    return n / elapsed, overhead


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--in-flight", type=int, default=50)
    parser.add_argument("--postgres", default="")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        schema = None
        if args.postgres:
            import asyncpg

            schema = f"bench_{uuid.uuid4().hex[:8]}"
            conn = await asyncpg.connect(args.postgres)
            await conn.execute(f'CREATE SCHEMA "{schema}"')
            await conn.close()
        db = Database(args.postgres or f"sqlite:///{Path(tmp) / 'bench.db'}", schema=schema, pool_size=args.in_flight)
        await db.upgrade()
        blobs = LocalBlobStore(Path(tmp) / "blobs")
        face = await blobs.put(b"face" * 100)
        users = []
        for i in range(100):
            user = await db.write(
                ensure_user, platform="telegram", platform_user_id=str(i), now=time.time(), welcome_credits=10**6
            )
            users.append(user.id or 0)
        backend = InstantBackend()
        settings = DispatchSettings(concurrency=args.in_flight, default_backend_concurrency=args.in_flight)
        router = Router({backend.name: backend}, [backend.name], Dispatcher.breakers_for([backend.name], settings))
        hub = ProgressHub()
        dispatcher = Dispatcher(
            db, blobs, router, settings=settings, queue=QueueSettings(running_cap=10**6), hub=hub, worker_id="bench"
        )
        process = psutil.Process()
        await run_batch(db, dispatcher, hub, users, face, args.jobs, "warm")
        rss_warm = process.memory_info().rss
        rate, overhead = await run_batch(db, dispatcher, hub, users, face, args.jobs, "run")
        rss_mid = rss_warm
        for batch in range(EXTRA_BATCHES):
            await run_batch(db, dispatcher, hub, users, face, args.jobs, f"extra{batch}")
            if batch == EXTRA_BATCHES // 2 - 1:
                rss_mid = process.memory_info().rss
        rss_after = process.memory_info().rss
        await db.dispose()
    overhead.sort()
    p50 = statistics.median(overhead) * 1000
    p99 = overhead[int(len(overhead) * 0.99) - 1] * 1000
    # Growth over the second half only: caches (SQLite pages, compiled statements) fill up early on.
    growth = (rss_after - rss_mid) / (EXTRA_BATCHES // 2 * args.jobs)
    store = "PostgreSQL" if args.postgres else "SQLite"
    print("| measure | result | target |")
    print("|---|---|---|")
    print(f"| throughput ({store}, {args.in_flight} in flight) | {rate:,.0f} jobs/s | ≥ 100 |")
    print(f"| service time per job, p50 / p99 | {p50:.1f} ms / {p99:.1f} ms | p99 < 50 ms |")
    half = EXTRA_BATCHES // 2 * args.jobs
    print(
        f"| resident memory: after warm-up / +{half:,} jobs / +{2 * half:,} jobs | {rss_warm / 2**20:.1f} / "
        f"{rss_mid / 2**20:.1f} / {rss_after / 2**20:.1f} MiB ({growth:+.0f} B/job over the last {half:,}) "
        "| no growth per job |"
    )


if __name__ == "__main__":
    asyncio.run(main())
