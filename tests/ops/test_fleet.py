"""A fleet on PostgreSQL and a real S3 server: one front-end-only `likeness run` with the Telegram fake, one
`likeness worker` serving only fal-flux-pulid (the fal fake), one serving only the local engine on tiny models.

Jobs pinned to a backend are claimed only by the worker serving it; progress edits reach the chat from either
worker; no blob touches the data directory; the local worker's death leaves its jobs waiting until another
starts; SIGTERM drains a worker without losing or double-charging anyone."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import asyncpg
import numpy as np
import pytest
from PIL import Image

from storage import jobs, reconcile, users, workers
from storage.db import Database
from storage.notify import JOBS, PgNotifier
from storage.object_blobs import ObjectBlobStore
from storage.states import DeliveryState, JobState
from tests.bot.telegram.stack import face_photo
from tests.bot.test_cli_admin import LIKENESS
from tests.conftest import POSTGRES_URL
from tests.engine.local import face_models, tiny
from tests.fakes import fal
from tests.fakes.fal import FalScript
from tests.fakes.telegram import FakeTelegram, TgChat
from tests.s3_server import S3Server

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    name = f"fleet_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(POSTGRES_URL.replace("postgresql+asyncpg://", "postgresql://"))
    await conn.execute(f'CREATE SCHEMA "{name}"')
    try:
        yield name
    finally:
        await conn.execute(f'DROP SCHEMA "{name}" CASCADE')
        await conn.close()


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.write_models_dir(tmp_path_factory.mktemp("models"))


class Fleet:
    """The processes of one fleet and what the test reads about them."""

    def __init__(self, tmp_path: Path, env: dict[str, str], db: Database, telegram: FakeTelegram) -> None:
        self.tmp_path, self.env, self.db, self.telegram = tmp_path, env, db, telegram
        self.processes: dict[str, asyncio.subprocess.Process] = {}

    async def start(self, name: str, *args: str, env: dict[str, str]) -> None:
        log = self.tmp_path / f"{name}.log"
        with log.open("ab") as handle:
            self.processes[name] = await asyncio.create_subprocess_exec(
                *args, env={**self.env, **env}, stdout=handle, stderr=handle, cwd=ROOT
            )

    def log(self, name: str) -> str:
        return (self.tmp_path / f"{name}.log").read_text(errors="replace")

    def started_jobs(self, name: str) -> set[str]:
        """Jobs the process's log says it started."""
        found = set()
        for line in self.log(name).splitlines():
            if "job started" in line and '"job_id": "' in line:
                found.add(line.split('"job_id": "', 1)[1].split('"', 1)[0])
        return found

    async def stop(self, name: str, sig: int = signal.SIGTERM) -> int:
        process = self.processes[name]
        if process.returncode is None:
            process.send_signal(sig)
        return await asyncio.wait_for(process.wait(), 60)

    async def stop_all(self) -> None:
        for process in self.processes.values():
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        for name in self.processes:
            try:
                await self.stop(name)
            except TimeoutError:
                self.processes[name].kill()

    async def live_workers(self) -> dict[str, dict[str, int]]:
        return {
            w.host + ":" + str(w.pid): w.backends for w in await self.db.read(workers.live, now=time.time(), ttl_s=3)
        }

    async def job(self, job_id: str) -> Any:
        job = await self.db.read(jobs.get, job_id=job_id)
        assert job is not None
        return job


async def until(measure: Callable[[], Awaitable[T]], done: Callable[[T], bool], *, within_s: float, what: str) -> T:
    deadline = time.monotonic() + within_s
    while True:
        value = await measure()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: stuck at {value!r}")
        await asyncio.sleep(0.2)


def _png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


async def post_status(telegram: FakeTelegram, chat: TgChat, text: str) -> int:
    """A status message the bot posted (as the front end does when a job is queued)."""
    async with aiohttp.ClientSession() as http:
        url = f"{telegram.base_url}{telegram.token}/sendMessage"
        async with http.post(url, json={"chat_id": chat.id, "text": text}) as answer:
            return int((await answer.json())["result"]["message_id"])


@pytest.mark.timeout(600)
async def test_a_fleet_routes_by_backend_shows_progress_waits_for_workers_and_drains(
    tmp_path: Path, schema: str, s3_server: S3Server, models_dir: Path
) -> None:
    prefix = f"fleet-{uuid.uuid4().hex[:8]}"
    data_dir = tmp_path / "data"
    async with FakeTelegram() as telegram, fal.start_fal() as fake_fal:
        fake_fal.script = FalScript(queue_ticks=4, run_ticks=1)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LIKENESS_", "AWS_"))}
        env.update(s3_server.env())
        env.update(
            {
                "PYTHONPATH": str(ROOT),
                "LIKENESS_DATA_DIR": str(data_dir),
                "LIKENESS_DATABASE_URL": POSTGRES_URL,
                "LIKENESS_DATABASE_SCHEMA": schema,
                "LIKENESS_BLOBS__URL": s3_server.url(prefix),
                "LIKENESS_QUEUE__LEASE_S": "6",
                "LIKENESS_QUEUE__HEARTBEAT_S": "1",
                "LIKENESS_QUEUE__RUNNING_CAP": "10",
                "LIKENESS_METRICS__ADDRESS": "",
                "LIKENESS_LOG__FORMAT": "json",
                "LIKENESS_LOG__LEVEL": "INFO",
                # Plain colour photos stand in for faces: no face judge, no privacy notice to agree to.
                "LIKENESS_JUDGE__ENABLED": "false",
                "LIKENESS_PRIVACY__CONSENT": "false",
            }
        )
        upgrade = await asyncio.create_subprocess_exec(LIKENESS, "db", "upgrade", env=env)
        assert await upgrade.wait() == 0

        db = Database(POSTGRES_URL, schema=schema)
        blobs = ObjectBlobStore.from_url(s3_server.url(prefix), env=s3_server.env())
        fleet = Fleet(tmp_path, env, db, telegram)
        notifier = PgNotifier(POSTGRES_URL.replace("postgresql+asyncpg://", "postgresql://"), namespace=schema)
        await notifier.start()
        bot_env = {
            "LIKENESS_TELEGRAM__TOKEN": telegram.token,
            "LIKENESS_TELEGRAM__BASE_URL": telegram.base_url,
            "LIKENESS_TELEGRAM__BASE_FILE_URL": telegram.base_file_url,
            "LIKENESS_DISPATCH__CONCURRENCY": "0",
            "LIKENESS_ROUTE": "fal-flux-pulid",
        }
        fal_env = {
            "LIKENESS_FAL__KEY": fal.KEY,
            "LIKENESS_FAL__BASE_URL": fake_fal.url,
            "LIKENESS_ROUTE": "fal-flux-pulid",  # what this worker serves, of what its keys allow
            "LIKENESS_DISPATCH__DRAIN_S": "1",
        }
        local_env = {
            "LIKENESS_LOCAL__MODELS_DIR": str(models_dir),
            "LIKENESS_ROUTE": "local",
            "LIKENESS_DISPATCH__DRAIN_S": "60",
        }
        local_worker = (sys.executable, "-m", "tests.ops.tiny_local_worker")
        try:
            await fleet.start("bot", LIKENESS, "run", env=bot_env)
            await fleet.start("fal-worker", LIKENESS, "worker", env=fal_env)
            await fleet.start("local-worker", *local_worker, env=local_env)
            served = await until(
                fleet.live_workers, lambda live: len(live) == 2, within_s=120, what="workers registered"
            )
            assert sorted(sorted(backends) for backends in served.values()) == [["fal-flux-pulid"], ["local"]]

            # A chat user's job: queued by the bot, rendered by the fal worker, its progress edited in the chat.
            ann = telegram.user("Ann")
            chat = telegram.private_chat(ann)
            telegram.send_photo(ann, chat, face_photo(), caption="a lighthouse keeper")
            delivered = await telegram.wait_for(
                lambda: next((m for m in telegram.messages(chat) if m.photo is not None), None), timeout=90
            )
            assert delivered.photo is not None
            assert any(
                "fal-flux-pulid" in (state.get("text") or "")
                for m in telegram.messages(chat)
                for state in [m.raw, *m.history]
            )

            # Jobs pinned to each backend, each with its status message.
            user = await db.write(
                users.ensure_user, platform="telegram", platform_user_id=str(ann.id), now=time.time(), welcome_credits=0
            )
            face = await blobs.put(face_photo())
            local_face = await blobs.put(_png(face_models.face_photo()))
            statuses: dict[str, int] = {}

            async def submit(job_id: str, backend: str, **params: Any) -> None:
                statuses[job_id] = await post_status(telegram, chat, "Queued.")
                await db.write(
                    jobs.submit,
                    job=jobs.NewJob(
                        id=job_id,
                        user_id=user.id or 0,
                        params={"prompt": f"portrait {job_id}", "width": 256, "height": 256, **params},
                        cost=0,
                        face_keys=[local_face if backend == "local" else face],
                        route=[backend],
                        pinned=True,
                        reply_target={"platform": "telegram", "chat_id": chat.id, "status_id": statuses[job_id]},
                        deadline_s=600,
                    ),
                    now=time.time(),
                    daily_jobs_default=1000,
                )
                await notifier.send(JOBS)

            fal_jobs = [f"fal-{i}" for i in range(3)]
            local_jobs = [f"local-{i}" for i in range(3)]
            for i in range(3):
                await submit(fal_jobs[i], "fal-flux-pulid")
                await submit(local_jobs[i], "local", steps=4)

            async def delivered_count(ids: list[str]) -> int:
                return sum([(await fleet.job(i)).delivery_state == DeliveryState.DELIVERED for i in ids])

            await until(lambda: delivered_count(fal_jobs + local_jobs), lambda n: n == 6, within_s=180, what="pinned")
            for job_id in fal_jobs + local_jobs:
                job = await fleet.job(job_id)
                assert job.state == JobState.SUCCEEDED, (job_id, job.error, job.error_detail)
                assert job.backend == ("local" if job_id.startswith("local") else "fal-flux-pulid")
            assert fleet.started_jobs("fal-worker") >= set(fal_jobs)
            assert not fleet.started_jobs("fal-worker") & set(local_jobs)
            assert fleet.started_jobs("local-worker") == set(local_jobs)
            # Progress from both workers reached the status messages (edited before the result replaced them).
            edited = {
                job_id: [
                    s.get("text")
                    for m in telegram.all_messages()
                    if m.message_id == statuses[job_id]
                    for s in [*m.history, m.raw]
                ]
                for job_id in fal_jobs + local_jobs
            }
            assert any(
                any("fal-flux-pulid" in (t or "") for t in texts) for j, texts in edited.items() if j.startswith("fal")
            )
            assert any(any("local" in (t or "") for t in texts) for j, texts in edited.items() if j.startswith("local"))

            # Photos and outputs live in the bucket; nothing in the data directory's blob folder.
            assert not (data_dir / "blobs").exists() or not any((data_dir / "blobs").rglob("*"))
            assert len(s3_server.keys(prefix)) >= 4

            # The local worker dies: its jobs wait (the fal worker does not take them) until another starts.
            assert await fleet.stop("local-worker", signal.SIGKILL) == -signal.SIGKILL
            waiting = [f"local-wait-{i}" for i in range(2)]
            for job_id in waiting:
                await submit(job_id, "local", steps=4)
            await asyncio.sleep(8)  # past the dead worker's registration and a few claim polls
            for job_id in waiting:
                job = await fleet.job(job_id)
                assert (job.state, job.attempt) == (JobState.QUEUED, 0), job_id
            assert sorted(sorted(b) for b in (await fleet.live_workers()).values()) == [["fal-flux-pulid"]]
            await fleet.start("local-worker-2", *local_worker, env=local_env)
            await until(lambda: delivered_count(waiting), lambda n: n == 2, within_s=180, what="waiting jobs")
            for job_id in waiting:
                job = await fleet.job(job_id)
                assert (job.state, job.backend) == (JobState.SUCCEEDED, "local"), (job_id, job.error_detail)

            # SIGTERM drains: a fal job stuck at the provider is handed back within the drain, uncharged, and the
            # next fal worker resumes the same request instead of paying again.
            fake_fal.script = FalScript(queue_ticks=10_000)
            await submit("fal-drained", "fal-flux-pulid")
            await until(
                lambda: asyncio.sleep(0, len(fake_fal.requests("submit"))),
                lambda n: n == 4 + 1,
                within_s=60,
                what="stuck submit",
            )
            await until(lambda: fleet.job("fal-drained"), lambda j: j.provider_ref is not None, within_s=30, what="ref")
            assert await fleet.stop("fal-worker") == 0
            drained = await fleet.job("fal-drained")
            assert (drained.state, drained.lease_owner) == (JobState.QUEUED, None)
            for job in fake_fal.jobs.values():
                job.script.queue_ticks = 0
            await fleet.start("fal-worker-2", LIKENESS, "worker", env=fal_env)
            await until(lambda: delivered_count(["fal-drained"]), lambda n: n == 1, within_s=90, what="drained job")
            assert len(fake_fal.requests("submit")) == 5  # resumed, not submitted again

            # And a local job running when its worker is told to stop finishes within the drain.
            # Big enough to be caught rendering: at 256² and 4 steps the tiny models finish in about 0.1 s.
            await submit("local-finishing", "local", width=512, height=512, steps=24)
            await until(
                lambda: fleet.job("local-finishing"), lambda j: j.state == JobState.RUNNING, within_s=60, what="start"
            )
            assert await fleet.stop("local-worker-2") == 0
            finishing = await fleet.job("local-finishing")
            assert finishing.state == JobState.SUCCEEDED and finishing.attempt == 1
        finally:
            await notifier.close()
            await fleet.stop_all()

        try:
            assert await db.read(reconcile.find_drift) == []
            for name in ("bot", "fal-worker", "local-worker-2"):
                assert "Traceback" not in fleet.log(name), fleet.log(name)[-3000:]
        finally:
            await db.dispose()
