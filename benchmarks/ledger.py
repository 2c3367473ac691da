"""Ledger throughput: submit → claim → complete cycles on SQLite, concurrent claims on PostgreSQL.

Usage: python -m benchmarks.ledger [--postgres URL] [--cycles N] [--claims N] [--claimers N]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import asyncpg

from storage import jobs
from storage.db import Database
from storage.users import ensure_user


async def _users(db: Database, count: int, credits: int) -> list[int]:
    ids = []
    for i in range(count):
        user = await db.write(
            ensure_user,
            platform="telegram",
            platform_user_id=str(i),
            now=time.time(),
            welcome_credits=credits,
        )
        ids.append(user.id or 0)
    return ids


async def sqlite_cycles(cycles: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{Path(tmp) / 'bench.db'}")
        await db.upgrade()
        users = await _users(db, 10, cycles)
        start = time.perf_counter()
        for i in range(cycles):
            now = time.time()
            await db.write(
                jobs.submit,
                job=jobs.NewJob(id=f"c{i}", user_id=users[i % 10], params={"prompt": "x"}, cost=1),
                now=now,
                daily_jobs_default=cycles,
            )
            job = await db.write(jobs.claim, worker="bench", lease_s=30, running_cap=2, now=now)
            assert job is not None
            assert await db.write(jobs.complete, job_id=job.id, attempt=job.attempt, images=[], now=now)
        elapsed = time.perf_counter() - start
        await db.dispose()
    return cycles / elapsed, elapsed


async def postgres_claims(url: str, total: int, claimers: int) -> tuple[float, int, float]:
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    db = Database(url, schema=schema, pool_size=claimers)
    try:
        await db.upgrade()
        users = await _users(db, 200, total)
        for i in range(total):
            await db.write(
                jobs.submit,
                job=jobs.NewJob(id=f"p{i}", user_id=users[i % 200], params={}, cost=1),
                now=time.time() - 1,
                daily_jobs_default=total,
            )
        claimed: list[str] = []

        async def claimer(n: int) -> None:
            while True:
                job = await db.write_lossy(jobs.claim, worker=f"w{n}", lease_s=30, running_cap=10_000, now=time.time())
                if job is None:
                    return
                claimed.append(job.id)

        start = time.perf_counter()
        await asyncio.gather(*(claimer(n) for n in range(claimers)))
        elapsed = time.perf_counter() - start
        duplicates = sum(c - 1 for c in Counter(claimed).values())
        assert len(set(claimed)) == total
        return total / elapsed, duplicates, elapsed
    finally:
        await db.dispose()
        await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await admin.close()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--cycles", type=int, default=2000)
    parser.add_argument("--claims", type=int, default=4000)
    parser.add_argument("--claimers", type=int, default=32)
    args = parser.parse_args()
    rate, elapsed = await sqlite_cycles(args.cycles)
    print("| measure | result | target |")
    print("|---|---|---|")
    print(
        f"| SQLite submit→claim→complete, 1 process | {rate:,.0f} cycles/s ({args.cycles} in {elapsed:.2f} s) | ≥ 500 |"
    )
    if args.postgres:
        prate, dups, pelapsed = await postgres_claims(args.postgres, args.claims, args.claimers)
        print(
            f"| PostgreSQL claims, {args.claimers} concurrent claimers | {prate:,.0f} claims/s "
            f"({args.claims} in {pelapsed:.2f} s), {dups} duplicates | ≥ 1,000, 0 duplicates |"
        )


if __name__ == "__main__":
    asyncio.run(main())
