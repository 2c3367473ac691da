"""Scale-out on PostgreSQL: one `likeness run` and two `likeness worker` processes share 200 jobs, and one
worker is killed halfway. No job is lost, none runs twice, every user is charged once."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from storage import jobs, reconcile, users
from storage.blobs import LocalBlobStore
from storage.db import Database
from storage.states import DeliveryState, JobState
from tests.bot.telegram.stack import face_photo
from tests.bot.test_cli_admin import LIKENESS
from tests.conftest import POSTGRES_URL
from tests.fakes import fal
from tests.fakes.fal import FalScript
from tests.fakes.telegram import FakeTelegram

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

JOBS = 200
USERS = 20


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    name = f"scale_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(POSTGRES_URL.replace("postgresql+asyncpg://", "postgresql://"))
    await conn.execute(f'CREATE SCHEMA "{name}"')
    try:
        yield name
    finally:
        await conn.execute(f'DROP SCHEMA "{name}" CASCADE')
        await conn.close()


async def spawn(env: dict[str, str], *args: str, log: Path) -> asyncio.subprocess.Process:
    with log.open("wb") as handle:  # the child keeps its own copy of the descriptor
        return await asyncio.create_subprocess_exec(LIKENESS, *args, env=env, stdout=handle, stderr=handle)


@pytest.mark.timeout(300)
async def test_two_workers_and_a_bot_finish_every_job_once_when_one_worker_dies(tmp_path: Path, schema: str) -> None:
    async with FakeTelegram() as telegram, fal.start_fal() as fake_fal:
        fake_fal.script = FalScript(queue_ticks=1, run_ticks=1)
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIKENESS_")}
        env.update(
            {
                "LIKENESS_DATA_DIR": str(tmp_path / "data"),
                "LIKENESS_DATABASE_URL": POSTGRES_URL,
                "LIKENESS_DATABASE_SCHEMA": schema,
                "LIKENESS_ROUTE": "fal-flux-pulid",
                "LIKENESS_FAL__KEY": fal.KEY,
                "LIKENESS_FAL__BASE_URL": fake_fal.url,
                "LIKENESS_QUEUE__LEASE_S": "3",
                "LIKENESS_QUEUE__HEARTBEAT_S": "1",
                "LIKENESS_QUEUE__RUNNING_CAP": "20",
                "LIKENESS_DISPATCH__POLL_S": "0.2",
                "LIKENESS_DISPATCH__CONCURRENCY": "30",
                "LIKENESS_METRICS__ADDRESS": "",
                # Three processes stay well under a default server's 100 connections, beside other tests.
                "LIKENESS_DATABASE_POOL_SIZE": "5",
            }
        )
        upgrade = await spawn(env, "db", "upgrade", log=tmp_path / "upgrade.log")
        assert await upgrade.wait() == 0, (tmp_path / "upgrade.log").read_text()

        db = Database(POSTGRES_URL, schema=schema)
        blobs = LocalBlobStore(tmp_path / "data" / "blobs")
        people = [telegram.user(f"user{i}") for i in range(USERS)]
        key = await blobs.put(face_photo())
        owners = []
        for person in people:
            telegram.private_chat(person)
            user = await db.write(
                users.ensure_user,
                platform="telegram",
                platform_user_id=str(person.id),
                now=time.time(),
                welcome_credits=50,
            )
            owners.append((user.id or 0, person.id))
        for index in range(JOBS):
            user_id, chat_id = owners[index % USERS]
            await db.write(
                jobs.submit,
                job=jobs.NewJob(
                    id=f"scale-{index}",
                    user_id=user_id,
                    params={"prompt": f"portrait {index}", "num_images": 1},
                    cost=1,
                    face_keys=[key],
                    route=["fal-flux-pulid"],
                    reply_target={"platform": "telegram", "chat_id": chat_id},
                    deadline_s=600,
                ),
                now=time.time(),
                daily_jobs_default=1000,
            )

        bot_env = {
            **env,
            "LIKENESS_TELEGRAM__TOKEN": telegram.token,
            "LIKENESS_TELEGRAM__BASE_URL": telegram.base_url,
            "LIKENESS_TELEGRAM__BASE_FILE_URL": telegram.base_file_url,
        }
        processes = [
            await spawn(bot_env, "run", log=tmp_path / "bot.log"),
            await spawn(env, "worker", log=tmp_path / "worker1.log"),
            await spawn(env, "worker", log=tmp_path / "worker2.log"),
        ]
        try:
            await until(lambda: finished(db), lambda n: n >= JOBS // 2, within_s=120)
            processes[1].send_signal(signal.SIGKILL)
            await processes[1].wait()
            await until(lambda: delivered(db), lambda n: n == JOBS, within_s=180)
        finally:
            for process in processes:
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)
            for process in processes:
                await asyncio.wait_for(process.wait(), 30)

        try:
            await check_outcome(db, telegram, fake_fal, owners)
        finally:
            await db.dispose()


async def check_outcome(
    db: Database, telegram: FakeTelegram, fake_fal: fal.FakeFal, owners: list[tuple[int, int]]
) -> None:
    rerun = 0
    charged: dict[int, int] = {}
    for i in range(JOBS):
        job = await db.read(jobs.get, job_id=f"scale-{i}")
        assert job is not None
        # A job whose submit the worker had sent, but whose answer it had not stored, when it died is failed
        # (refunded) rather than sent again: the provider may have taken it.
        interrupted = job.error == "unknown_outcome" and "stopped before storing its answer" in (job.error_detail or "")
        assert job.state == JobState.SUCCEEDED or (job.state == JobState.FAILED and interrupted), job.error_detail
        rerun += job.attempt > 1
        charged[job.user_id] = charged.get(job.user_id, 0) + (job.state == JobState.SUCCEEDED)
    assert rerun > 0  # the killed worker had jobs in flight; others resumed them after the lease
    assert len(fake_fal.requests("submit")) == JOBS  # nothing submitted (paid for) twice
    photos = [m for m in telegram.all_messages() if m.photo is not None]
    assert len(photos) == sum(charged.values()) >= JOBS - 10
    assert await db.read(reconcile.find_drift) == []
    for user_id, _chat in owners:
        user = await db.read(users.get_user, user_id=user_id)
        assert user is not None and (user.credits, user.reserved) == (50 - charged.get(user_id, 0), 0)


async def finished(db: Database) -> int:
    from storage import stats

    collected = await db.read(stats.collect, since=0)
    return collected.by_state.get(JobState.SUCCEEDED, 0)


async def delivered(db: Database) -> int:
    return await db.read(_count_delivered)


def _count_delivered(*, session: object) -> int:
    from sqlalchemy import func, select

    from storage import tables

    query = select(func.count()).select_from(tables.jobs).where(tables.jobs.c.delivery_state == DeliveryState.DELIVERED)
    return int(session.execute(query).scalar_one())  # type: ignore[attr-defined]


async def until(measure: object, done: object, *, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while True:
        value = await measure()  # type: ignore[operator]
        if done(value):  # type: ignore[operator]
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"stuck at {value}")
        await asyncio.sleep(0.25)
