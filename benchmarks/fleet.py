"""The fleet across processes on PostgreSQL: how fast a queued job is claimed by a `likeness worker` process,
how fast a finished job reaches delivery in another process, and what idle workers cost the database.

- submit → claim: this process queues a job (as the bot does: submit, then NOTIFY); a worker process claims it.
  Measured as the job's ``started_at`` minus the time just before the submit.
- render finished → delivery start: a worker records the job's end (``finished_at``); this process, running
  the bot's delivery over the notifications, calls its front end. Measured at that call.
- idle load: transactions committed per second in the benchmark's database (``pg_stat_database``: every
  autocommit statement is one) while N workers (and a front-end-only bot, when asked) idle.

The workers render through the fal fake (on 127.0.0.1), which answers at its first status poll.
Usage: python -m benchmarks.fleet [--postgres URL] [--jobs N] [--workers N] [--idle-s S]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import asyncpg

from bot.delivery import Delivery
from bot.frontend import DeliveryParts
from bot.service.replies import Reply
from bot.service.results import Results
from engine.events import ProgressHub, ProgressRelay
from storage import jobs, notify
from storage.blobs import LocalBlobStore
from storage.db import Database
from storage.users import ensure_user
from tests.fakes import fal
from tests.fakes.fal import FalScript

LIKENESS = shutil.which("likeness") or str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / "likeness")


class RecordingFrontEnd:
    """A front end that delivers nothing and notes when delivery of each job started."""

    platform = "telegram"

    def __init__(self, expected: int) -> None:
        self.started: dict[str, float] = {}
        self.expected = expected
        self.all_started = asyncio.Event()

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def parse_target(self, data: Mapping[str, Any]) -> Mapping[str, Any]:
        return data

    async def deliver(self, job_id: str, target: Any, reply: Reply, parts: DeliveryParts | None = None) -> str:
        self.started.setdefault(job_id, time.time())
        if len(self.started) >= self.expected:
            self.all_started.set()
        return "recorded"

    async def show_progress(self, job_id: str, target: Any, text: str) -> None: ...


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@contextlib.asynccontextmanager
async def scratch_database(server: str) -> AsyncIterator[str]:
    """A database of its own, so its statistics count only the fleet's statements."""
    name = f"likeness_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(server)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield server.rsplit("/", 1)[0] + "/" + name
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


async def committed(server: str, database: str) -> int:
    admin = await asyncpg.connect(server)
    try:
        # Statistics reach the view a little after the transactions: ask for a fresh snapshot.
        await admin.execute("SELECT pg_stat_clear_snapshot()")
        row = await admin.fetchrow(
            "SELECT xact_commit + xact_rollback AS n FROM pg_stat_database WHERE datname = $1", database
        )
        return int(row["n"]) if row else 0
    finally:
        await admin.close()


async def spawn(env: dict[str, str], *args: str, log: Path) -> asyncio.subprocess.Process:
    with log.open("ab") as handle:
        return await asyncio.create_subprocess_exec(LIKENESS, *args, env=env, stdout=handle, stderr=handle)


async def stop_all(processes: list[asyncio.subprocess.Process]) -> None:
    for process in processes:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        await asyncio.wait_for(process.wait(), 60)


async def latency(url: str, env: dict[str, str], tmp: Path, *, jobs_n: int, workers_n: int) -> dict[str, float]:
    db = Database(url)
    blobs = LocalBlobStore(tmp / "data" / "blobs")
    face = await blobs.put(b"face photo bytes")
    owners = [
        (
            await db.write(
                ensure_user, platform="telegram", platform_user_id=str(i), now=time.time(), welcome_credits=10**6
            )
        ).id
        or 0
        for i in range(50)
    ]
    processes = [await spawn(env, "worker", log=tmp / f"worker{i}.log") for i in range(workers_n)]
    notifier = notify.open_notifier(db)
    hub = ProgressHub()
    relay = ProgressRelay(hub, notifier, origin="bench-bot")
    front = RecordingFrontEnd(jobs_n)
    delivery = Delivery(Results(db=db, blobs=blobs), {"telegram": front}, hub, poll_s=10.0)
    await notifier.start()
    relay.start()
    stop = asyncio.Event()
    delivering = asyncio.create_task(delivery.run(stop))
    submitted: dict[str, float] = {}
    try:
        await asyncio.sleep(5)  # the workers connect and register
        for i in range(jobs_n):
            job_id = f"bench-{i}"
            now = time.time()
            submitted[job_id] = now
            await db.write(
                jobs.submit,
                job=jobs.NewJob(
                    id=job_id,
                    user_id=owners[i % len(owners)],
                    params={"prompt": "p"},
                    cost=1,
                    face_keys=[face],
                    route=["fal-flux-pulid"],
                    reply_target={"platform": "telegram", "chat_id": i},
                ),
                now=now,
                daily_jobs_default=10**9,
            )
            await notifier.send(notify.JOBS)
            await asyncio.sleep(0.05)  # an arrival every 50 ms: the queue stays short, waking is what counts
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(front.all_started.wait(), 120)
        claim, deliver = [], []
        for job_id, at in submitted.items():
            job = await db.read(jobs.get, job_id=job_id)
            assert job is not None and job.started_at is not None
            claim.append(job.started_at - at)
            if job_id in front.started and job.finished_at is not None:
                deliver.append(front.started[job_id] - job.finished_at)
    finally:
        stop.set()
        await delivering
        await relay.close()
        await notifier.close()
        await stop_all(processes)
        await db.dispose()
    slow = sorted(round(c, 2) for c in claim if c > 0.1)
    if slow:
        print(f"claims over 100 ms: {len(slow)}: {slow[:20]}")
    return {
        "jobs": jobs_n,
        "delivered": len(deliver),
        "claim_p50_ms": 1000 * statistics.median(claim),
        "claim_p99_ms": 1000 * pct(claim, 0.99),
        "deliver_p50_ms": 1000 * statistics.median(deliver),
        "deliver_p99_ms": 1000 * pct(deliver, 0.99),
    }


async def idle_load(
    server: str, database: str, env: dict[str, str], tmp: Path, *, workers_n: int, seconds: float, bot: bool
) -> float:
    processes = [await spawn(env, "worker", log=tmp / f"idle{i}.log") for i in range(workers_n)]
    if bot:
        bot_env = {**env, "LIKENESS_DISPATCH__CONCURRENCY": "0"}
        processes.append(await spawn(bot_env, "run", log=tmp / "idle-bot.log"))
    try:
        # Start-up statements are not idle load; backends report their counts up to 10 s late.
        await asyncio.sleep(45)
        before = await committed(server, database)
        await asyncio.sleep(seconds)
        after = await committed(server, database)
    finally:
        await stop_all(processes)
    return (after - before) / seconds


async def main(args: argparse.Namespace) -> None:
    server = args.postgres.replace("postgresql+asyncpg://", "postgresql://")
    async with scratch_database(server) as url, fal.start_fal() as fake_fal:
        fake_fal.script = FalScript(queue_ticks=0, run_ticks=0)
        tmp = Path(tempfile.mkdtemp(prefix="likeness-fleet-bench-"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIKENESS_")}
        env.update(
            {
                "LIKENESS_DATA_DIR": str(tmp / "data"),
                "LIKENESS_DATABASE_URL": url,
                "LIKENESS_ROUTE": "fal-flux-pulid",
                "LIKENESS_FAL__KEY": fal.KEY,
                "LIKENESS_FAL__BASE_URL": fake_fal.url,
                "LIKENESS_QUEUE__RUNNING_CAP": "50",
                "LIKENESS_METRICS__ADDRESS": "",
                "LIKENESS_LOG__LEVEL": "WARNING",
            }
        )
        upgrade = await spawn(env, "db", "upgrade", log=tmp / "upgrade.log")
        assert await upgrade.wait() == 0, (tmp / "upgrade.log").read_text()
        database = url.rsplit("/", 1)[1]
        idle = await idle_load(server, database, env, tmp, workers_n=4, seconds=args.idle_s, bot=False)
        print(f"idle: 4 workers: {idle:.2f} transactions/s")
        idle_bot = await idle_load(server, database, env, tmp, workers_n=4, seconds=args.idle_s, bot=True)
        print(f"idle: 4 workers and a front-end-only bot: {idle_bot:.2f} transactions/s")
        figures = await latency(url, env, tmp, jobs_n=args.jobs, workers_n=args.workers)
        print(
            f"{figures['jobs']:.0f} jobs over {args.workers} worker processes "
            f"({figures['delivered']:.0f} delivered):\n"
            f"  submit → claim:                    p50 {figures['claim_p50_ms']:.1f} ms, "
            f"p99 {figures['claim_p99_ms']:.1f} ms\n"
            f"  render finished → delivery start:  p50 {figures['deliver_p50_ms']:.1f} ms, "
            f"p99 {figures['deliver_p99_ms']:.1f} ms"
        )
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--postgres", default=os.environ.get("LIKENESS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    )
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--idle-s", type=float, default=60.0)
    asyncio.run(main(parser.parse_args()))
