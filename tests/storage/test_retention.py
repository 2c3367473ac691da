"""Retention expires old finished jobs and deletes only the blobs nothing else references."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from bot.retention import DAY_S, retention_loop, sweep
from storage import blob_refs, jobs, retention
from storage import tables as t
from storage.blobs import LocalBlobStore
from storage.db import Database
from storage.states import JobState
from tests.storage.ledger_helpers import claim, new_user

OLD = 1_000.0
NOW = OLD + 31 * DAY_S


def _add_identity(*, session: Connection, user_id: int, photo_keys: list[str]) -> int:
    identity_id = session.execute(
        t.identities.insert()
        .values(user_id=user_id, name="me", is_default=True, photo_keys=photo_keys, created_at=OLD)
        .returning(t.identities.c.id)
    ).scalar_one()
    for key in photo_keys:
        blob_refs.add(session=session, blob_key=key, owner=blob_refs.identity_owner(identity_id))
    return int(identity_id)


def _image_count(*, session: Connection, job_id: str) -> int:
    return int(
        session.execute(select(func.count()).select_from(t.images).where(t.images.c.job_id == job_id)).scalar_one()
    )


class Scene:
    def __init__(self, db: Database, blobs: LocalBlobStore) -> None:
        self.db = db
        self.blobs = blobs
        self.user = 0

    async def setup(self) -> None:
        self.user = await new_user(self.db, credits=1_000)

    async def blob(self, name: str) -> str:
        return await self.blobs.put(name.encode())

    async def submit(self, job_id: str, face_keys: list[str], *, now: float) -> None:
        await self.db.write(
            jobs.submit,
            job=jobs.NewJob(id=job_id, user_id=self.user, params={"prompt": "p"}, cost=1, face_keys=face_keys),
            now=now,
            daily_jobs_default=10_000,
        )

    async def run(self, job_id: str, face_keys: list[str], *, now: float) -> int:
        """Submit and claim (the queue holds only this job); returns the attempt."""
        await self.submit(job_id, face_keys, now=now)
        claimed = await claim(self.db, now=now)
        assert claimed is not None and claimed.id == job_id
        return claimed.attempt

    async def succeed(self, job_id: str, face_keys: list[str], outputs: list[str], *, now: float) -> None:
        attempt = await self.run(job_id, face_keys, now=now)
        images = [
            jobs.NewImage(
                index=i,
                blob_key=key,
                sha256=key,
                content_type="image/png",
                size_bytes=1,
                width=8,
                height=8,
            )
            for i, key in enumerate(outputs)
        ]
        assert await self.db.write(
            jobs.complete, job_id=job_id, attempt=attempt, images=images, now=now + 5, backend="fake"
        )

    async def fail(self, job_id: str, face_keys: list[str], *, now: float) -> None:
        attempt = await self.run(job_id, face_keys, now=now)
        assert await self.db.write(jobs.fail, job_id=job_id, attempt=attempt, reason="provider_failed", now=now + 5)

    async def job(self, job_id: str) -> tuple[JobState, bool]:
        job = await self.db.read(jobs.get, job_id=job_id)
        assert job is not None
        return job.state, job.expired


@pytest.fixture
async def scene(db: Database, tmp_path: Path) -> Scene:
    built = Scene(db, LocalBlobStore(tmp_path / "blobs"))
    await built.setup()
    return built


async def test_sweep_expires_only_old_finished_jobs_and_unshared_blobs(scene: Scene) -> None:
    db, blobs = scene.db, scene.blobs
    identity_face = await scene.blob("identity face")
    old_face, old_out1, old_out2 = (
        await scene.blob("old face"),
        await scene.blob("o1"),
        await scene.blob("o2"),
    )
    failed_face = await scene.blob("failed face")
    recent_face, recent_out = await scene.blob("recent face"), await scene.blob("recent out")
    shared_face = await scene.blob("face of an old job and a queued one")
    queued_face, running_face = await scene.blob("queued face"), await scene.blob("running face")

    await db.write(_add_identity, user_id=scene.user, photo_keys=[identity_face])
    await scene.succeed("old-ok", [identity_face, old_face], [old_out1, old_out2], now=OLD)
    await scene.fail("old-failed", [failed_face], now=OLD + 10)
    await scene.succeed("old-shared", [shared_face], [], now=OLD + 20)
    await scene.succeed("recent", [recent_face], [recent_out], now=NOW - 2 * DAY_S)
    # Unfinished jobs submitted long ago: their raw photos are still needed.
    await scene.run("old-running", [running_face], now=OLD + 30)
    await scene.submit("old-queued", [queued_face, shared_face], now=OLD + 40)

    assert await sweep(db, blobs, days=30, now=NOW) == 3

    assert await scene.job("old-ok") == (JobState.SUCCEEDED, True)
    assert await scene.job("old-failed") == (JobState.FAILED, True)
    assert await scene.job("old-shared") == (JobState.SUCCEEDED, True)
    assert await scene.job("recent") == (JobState.SUCCEEDED, False)
    assert await scene.job("old-running") == (JobState.RUNNING, False)
    assert await scene.job("old-queued") == (JobState.QUEUED, False)

    for gone in (old_face, old_out1, old_out2, failed_face):
        assert not await blobs.exists(gone), gone
    for kept in (identity_face, recent_face, recent_out, shared_face, queued_face, running_face):
        assert await blobs.exists(kept), kept
    # History stays: the rows of the expired job and its images are still there.
    assert await db.read(_image_count, job_id="old-ok") == 2

    # A second sweep finds nothing new.
    assert await sweep(db, blobs, days=30, now=NOW) == 0

    # Once the queued job is cancelled and old enough, the shared face goes too; the identity's stays.
    assert await db.write(jobs.cancel, job_id="old-queued", now=NOW) == jobs.CancelOutcome.CANCELLED
    assert await sweep(db, blobs, days=30, now=NOW + 31 * DAY_S) == 2
    assert not await blobs.exists(shared_face)
    assert not await blobs.exists(queued_face)
    assert not await blobs.exists(recent_face)
    assert await blobs.exists(identity_face)
    assert await blobs.exists(running_face)


async def test_zero_days_keeps_everything(scene: Scene) -> None:
    face, out = await scene.blob("face"), await scene.blob("out")
    await scene.succeed("ancient", [face], [out], now=OLD)

    assert await sweep(scene.db, scene.blobs, days=0, now=NOW + 1_000 * DAY_S) == 0
    assert await scene.job("ancient") == (JobState.SUCCEEDED, False)
    assert await scene.blobs.exists(face) and await scene.blobs.exists(out)


async def test_sweep_works_through_batches(scene: Scene) -> None:
    keys = []
    for n in range(5):
        key = await scene.blob(f"face {n}")
        keys.append(key)
        await scene.fail(f"job-{n}", [key], now=OLD + n)

    first = await scene.db.write(retention.expire_finished, before=NOW, now=NOW, limit=2)
    assert first.job_ids == ["job-0", "job-1"] and first.more
    assert sorted(first.orphaned_keys) == sorted(keys[:2])

    # The sweep carries on batch after batch; blobs of the first, already released batch were the
    # caller's to delete, so only the rest go here.
    assert await sweep(scene.db, scene.blobs, days=30, now=NOW, batch=2) == 3
    assert [await scene.blobs.exists(key) for key in keys] == [True, True, False, False, False]


async def test_blob_taken_up_again_before_deletion_is_kept(scene: Scene) -> None:
    face = await scene.blob("face")
    await scene.fail("old", [face], now=OLD)
    batch = await scene.db.write(retention.expire_finished, before=NOW, now=NOW)
    assert batch.orphaned_keys == [face]
    # A new job sends the same photo between the release and the deletion.
    await scene.submit("new", [face], now=NOW)
    assert await scene.db.read(blob_refs.unreferenced, keys=batch.orphaned_keys) == []


async def test_retention_loop_sweeps_until_stopped(scene: Scene) -> None:
    face = await scene.blob("face")
    await scene.fail("old", [face], now=OLD)
    stop = asyncio.Event()
    loop = asyncio.create_task(
        retention_loop(scene.db, scene.blobs, days=30, interval_s=3600, stop=stop, clock=lambda: NOW)
    )
    # The sweep deletes the blob after the transaction that expired the job commits: wait for both.
    for _ in range(3000):
        if (await scene.job("old"))[1] and not await scene.blobs.exists(face):
            break
        await asyncio.sleep(0.01)
    assert await scene.job("old") == (JobState.FAILED, True)
    assert not await scene.blobs.exists(face)
    stop.set()
    await asyncio.wait_for(loop, timeout=5)


async def test_retention_loop_with_retention_off_expires_no_job(scene: Scene) -> None:
    face = await scene.blob("face")
    await scene.fail("ancient", [face], now=OLD)
    stop = asyncio.Event()
    loop = asyncio.create_task(
        retention_loop(scene.db, scene.blobs, days=0, interval_s=3600, stop=stop, clock=lambda: NOW + 1_000 * DAY_S)
    )
    await asyncio.sleep(0.2)  # a pass of the loop: only orphans may go, and this face is the job's
    assert not loop.done()
    stop.set()
    await asyncio.wait_for(loop, timeout=5)
    assert await scene.job("ancient") == (JobState.FAILED, False)
    assert await scene.blobs.exists(face)
