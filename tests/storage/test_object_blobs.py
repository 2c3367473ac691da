"""Blobs in a real S3-compatible server (SeaweedFS): content addressing, reference counting through
retention, and the orphan sweep work as on the local directory."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from bot.retention import sweep, sweep_orphans
from storage import identities, jobs
from storage.blobs import blob_key
from storage.db import Database
from storage.object_blobs import ObjectBlobStore, ObjectStoreError
from tests.s3_server import S3Server
from tests.storage.test_retention import Scene

DAY_S = 86_400.0


@pytest.fixture
def blobs(s3_server: S3Server) -> ObjectBlobStore:
    return ObjectBlobStore.from_url(s3_server.url(f"t-{uuid.uuid4().hex[:8]}"), env=s3_server.env())


async def test_blobs_are_named_by_their_bytes_and_read_back(blobs: ObjectBlobStore, s3_server: S3Server) -> None:
    await blobs.check()
    key = await blobs.put(b"a face")
    assert key == blob_key(b"a face")
    assert await blobs.put(b"a face") == key  # the same bytes: the same object
    assert await blobs.get(key) == b"a face"
    assert await blobs.exists(key)
    prefix = blobs.url.removeprefix(f"s3://{s3_server.bucket}/")
    assert s3_server.keys(prefix) == [f"{key[:2]}/{key[2:4]}/{key}"]
    await blobs.delete(key)
    await blobs.delete(key)  # gone already: no error
    assert not await blobs.exists(key)
    with pytest.raises(KeyError):
        await blobs.get(key)
    with pytest.raises(KeyError):
        await blobs.get("../../etc/passwd")


async def test_a_wrong_secret_or_a_missing_bucket_is_one_line_at_start(s3_server: S3Server) -> None:
    wrong = ObjectBlobStore.from_url(s3_server.url("x"), env={**s3_server.env(), "AWS_SECRET_ACCESS_KEY": "nope"})
    with pytest.raises(ObjectStoreError) as refused:
        await wrong.check()
    assert "\n" not in str(refused.value) and "nope" not in str(refused.value)
    missing = ObjectBlobStore.from_url("s3://no-such-bucket/x", env=s3_server.env())
    with pytest.raises(ObjectStoreError):
        await missing.check()
    with pytest.raises(ObjectStoreError):
        ObjectBlobStore.from_url("s3:///prefix-without-bucket")


async def test_the_orphan_sweep_deletes_old_unreferenced_blobs_only(db: Database, blobs: ObjectBlobStore) -> None:
    scene = Scene(db, blobs)  # type: ignore[arg-type]
    await scene.setup()
    orphan = await scene.blob("photo of a refused request")
    queued_face = await scene.blob("face of a queued job")
    identity_face = await scene.blob("face of a saved identity")
    await asyncio.sleep(1.1)  # object times have a resolution of a second
    cutoff = time.time()
    await asyncio.sleep(1.1)
    young = await scene.blob("photo just stored for a job not submitted yet")
    await scene.submit("queued", [queued_face], now=cutoff)
    await db.write(identities.save, user_id=scene.user, name="me", photo_keys=[identity_face], now=cutoff)

    assert await sweep_orphans(db, blobs, now=cutoff + 60, grace_s=60) == 1
    assert [await blobs.exists(key) for key in (orphan, queued_face, identity_face, young)] == [
        False,
        True,
        True,
        True,
    ]
    # Storing bytes again renews them: the sweep keeps a blob stored anew after its cutoff.
    renewed = await scene.blob("sent again")
    await asyncio.sleep(1.1)
    cutoff = time.time()
    await asyncio.sleep(1.1)
    assert await blobs.put(b"sent again") == renewed
    assert await blobs.delete_if_stored_before(renewed, cutoff) is False
    assert await sweep_orphans(db, blobs, now=time.time() + 3600, grace_s=60) == 2  # young and renewed
    assert await blobs.remove_partial(time.time()) == 0


async def test_retention_deletes_expired_outputs_and_keeps_shared_faces(db: Database, blobs: ObjectBlobStore) -> None:
    scene = Scene(db, blobs)  # type: ignore[arg-type]
    await scene.setup()
    now = time.time()
    shared_face = await scene.blob("face kept by an identity")
    own_face = await scene.blob("face of the old job only")
    output = await scene.blob("the old job's output")
    await db.write(identities.save, user_id=scene.user, name="me", photo_keys=[shared_face], now=now)
    await scene.succeed("old", [shared_face, own_face], [output], now=now - 40 * DAY_S)
    assert await sweep(db, blobs, days=30, now=now) == 1
    assert [await blobs.exists(key) for key in (shared_face, own_face, output)] == [True, False, False]
    job = await db.read(jobs.get, job_id="old")
    assert job is not None and job.expired
