"""Blobs nothing references (a refused request's photo, outputs of a lost completion, a crash before a
deletion) are swept once they are older than a grace period; a blob being written or stored again is not."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from bot.retention import DAY_S, retention_loop, sweep_orphans
from storage import identities, jobs, retention
from storage.blobs import LocalBlobStore
from storage.db import Database
from tests.storage.ledger_helpers import claim, new_user

NOW = 1_800_000_000.0
GRACE_S = 3600.0


def age(blobs: LocalBlobStore, key: str, stored_at: float) -> None:
    os.utime(blobs.path(key), (stored_at, stored_at))


def stored_at(blobs: LocalBlobStore, key: str) -> float:
    return blobs.path(key).stat().st_mtime


class Store:
    def __init__(self, db: Database, blobs: LocalBlobStore) -> None:
        self.db, self.blobs = db, blobs

    async def blob(self, name: str, *, stored_at: float = NOW - 2 * GRACE_S) -> str:
        key = await self.blobs.put(name.encode())
        age(self.blobs, key, stored_at)
        return key

    async def present(self, *keys: str) -> list[bool]:
        return [await self.blobs.exists(key) for key in keys]


@pytest.fixture
async def store(db: Database, tmp_path: Path) -> Store:
    return Store(db, LocalBlobStore(tmp_path / "blobs"))


async def test_only_old_blobs_nothing_references_are_swept(store: Store) -> None:
    db = store.db
    user = await new_user(db, credits=10)
    refused_photo = await store.blob("photo of a refused request")
    lost_output = await store.blob("output of a completion that never committed")
    queued_face = await store.blob("face of a queued job")
    identity_face = await store.blob("face of a saved identity")
    young = await store.blob("photo just stored for a job not submitted yet", stored_at=NOW - GRACE_S / 2)
    await db.write(
        jobs.submit,
        job=jobs.NewJob(id="queued", user_id=user, params={}, cost=1, face_keys=[queued_face]),
        now=NOW,
        daily_jobs_default=10,
    )
    await db.write(identities.save, user_id=user, name="me", photo_keys=[identity_face], now=NOW)

    assert await sweep_orphans(db, store.blobs, now=NOW, grace_s=GRACE_S) == 2
    assert await store.present(refused_photo, lost_output) == [False, False]
    assert await store.present(queued_face, identity_face, young) == [True, True, True]
    assert await sweep_orphans(db, store.blobs, now=NOW, grace_s=GRACE_S) == 0
    # Once past the grace period, the young one goes too.
    assert await sweep_orphans(db, store.blobs, now=NOW + GRACE_S, grace_s=GRACE_S) == 1
    assert await store.present(young, queued_face, identity_face) == [False, True, True]


async def test_storing_the_same_bytes_again_restarts_the_grace_period(store: Store) -> None:
    old = await store.blob("a photo refused last week", stored_at=NOW - 7 * DAY_S)
    # The user sends the same photo again: the store has it already, and a job is about to reference it.
    assert await store.blobs.put(b"a photo refused last week") == old
    assert await sweep_orphans(store.db, store.blobs, now=stored_at(store.blobs, old), grace_s=GRACE_S) == 0
    assert await store.present(old) == [True]


async def test_a_blob_stored_again_between_the_listing_and_the_deletion_is_kept(store: Store) -> None:
    key = await store.blob("listed as old")
    listed = [batch async for batch in store.blobs.stored_before(NOW - GRACE_S)]
    assert listed == [[key]]
    await store.blobs.put(b"listed as old")  # a new request stores it again meanwhile
    assert not await store.blobs.delete_if_stored_before(key, stored_at(store.blobs, key) - 1)
    assert await store.present(key) == [True]
    assert await store.blobs.delete_if_stored_before(key, NOW + 10 * DAY_S)
    assert await store.present(key) == [False]
    assert not await store.blobs.delete_if_stored_before(key, NOW + 10 * DAY_S)  # gone already


async def test_leftovers_of_unfinished_writes_are_swept_after_the_grace_period(store: Store) -> None:
    kept = await store.blob("a finished blob")
    folder = store.blobs.path(kept).parent
    stale, fresh = folder / ".tmp-stale", folder / ".tmp-fresh"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"being written now")
    os.utime(stale, (NOW - 2 * GRACE_S, NOW - 2 * GRACE_S))
    os.utime(fresh, (NOW, NOW))
    await store.db.write(identities.save, user_id=await new_user(store.db), name="me", photo_keys=[kept], now=NOW)

    await sweep_orphans(store.db, store.blobs, now=NOW, grace_s=GRACE_S)
    assert not stale.exists() and fresh.exists() and await store.present(kept) == [True]


async def test_blobs_released_by_a_commit_whose_deletion_never_ran_are_swept(store: Store) -> None:
    db = store.db
    user = await new_user(db, credits=10)
    face = await store.blob("face of an old job")
    await db.write(
        jobs.submit,
        job=jobs.NewJob(id="old", user_id=user, params={}, cost=1, face_keys=[face]),
        now=1000.0,
        daily_jobs_default=10,
    )
    job = await claim(db, now=1000.0)
    assert job is not None
    assert await db.write(jobs.fail, job_id="old", attempt=job.attempt, reason="provider_failed", now=1001.0)
    # The process dies after the commit that released the references, before deleting the files.
    batch = await db.write(retention.expire_finished, before=NOW, now=NOW)
    assert batch.orphaned_keys == [face]
    assert await store.present(face) == [True]
    assert await sweep_orphans(db, store.blobs, now=NOW, grace_s=GRACE_S) == 1
    assert await store.present(face) == [False]


@pytest.mark.parametrize("days", [30, 0])
async def test_the_retention_loop_sweeps_orphans_even_when_jobs_are_kept_forever(store: Store, days: float) -> None:
    orphan = await store.blob("orphan")
    stop = asyncio.Event()
    loop = asyncio.create_task(
        retention_loop(
            store.db, store.blobs, days=days, interval_s=3600, stop=stop, clock=lambda: NOW, orphan_grace_s=GRACE_S
        )
    )
    for _ in range(3000):
        if not await store.blobs.exists(orphan):
            break
        await asyncio.sleep(0.01)
    assert await store.present(orphan) == [False]
    stop.set()
    await asyncio.wait_for(loop, timeout=5)
