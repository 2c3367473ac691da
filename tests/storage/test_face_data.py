"""Face data in the store: embeddings go with their saved face, their job (retention too) and /forget; each
image's likeness reaches the stats per backend; consent is recorded once; a scope's safety policy."""

from __future__ import annotations

from storage import blob_refs, embeddings, history, identities, jobs, pending, retention, scopes, stats, users
from storage.db import Database
from storage.states import JobState
from tests.storage.ledger_helpers import claim, new_user, submit

VECTOR = b"\x00\x00\x80?" * 128  # 128 float32 ones


async def _owners_left(db: Database, *owners: str) -> list[int]:
    return [len(await db.read(embeddings.of_owner, owner=owner)) for owner in owners]


async def test_embeddings_are_stored_copied_and_replaced_in_order(db: Database) -> None:
    await db.write(embeddings.store, owner="job:a", embeddings=[("dlib", VECTOR), ("dlib", VECTOR[:8])], now=1.0)
    stored = await db.read(embeddings.of_owner, owner="job:a")
    assert [(e.position, e.judge, len(e.vector)) for e in stored] == [(0, "dlib", 512), (1, "dlib", 8)]
    assert await db.write(embeddings.copy, source="job:a", owner="job:b", now=2.0) == 2
    await db.write(embeddings.store, owner="job:a", embeddings=[("arcface", VECTOR)], now=3.0)
    assert [e.judge for e in await db.read(embeddings.of_owner, owner="job:a")] == ["arcface"]
    assert await _owners_left(db, "job:a", "job:b") == [1, 2]


async def test_a_saved_face_keeps_its_embeddings_until_it_is_replaced_or_deleted(db: Database) -> None:
    user_id = await new_user(db)
    me, _freed = await db.write(
        identities.save, user_id=user_id, name="me", photo_keys=["a" * 64], now=1.0, face_embeddings=[("d", VECTOR)]
    )
    owner = blob_refs.identity_owner(me.id or 0)
    assert await _owners_left(db, owner) == [1]
    await db.write(identities.save, user_id=user_id, name="me", photo_keys=["b" * 64], now=2.0)
    again = await db.read(identities.find, user_id=user_id, name="me")
    assert again is not None
    assert await _owners_left(db, blob_refs.identity_owner(again.id or 0)) == [0]
    await db.write(
        identities.save, user_id=user_id, name="me", photo_keys=["b" * 64], now=3.0, face_embeddings=[("d", VECTOR)]
    )
    await db.write(identities.remove, user_id=user_id, name="me")
    assert await db.read(embeddings.count, owners=[owner, blob_refs.identity_owner(again.id or 0)]) == 0


async def test_retention_deletes_an_expired_job_s_embeddings_with_its_photos(db: Database) -> None:
    user_id = await new_user(db)
    for job_id in ("old", "new"):
        await submit(db, job_id, user_id)
        await db.write(embeddings.store, owner=blob_refs.job_owner(job_id), embeddings=[("d", VECTOR)], now=1.0)
    job = await claim(db)
    assert job is not None and job.id == "old"
    assert await db.write(jobs.fail, job_id="old", attempt=job.attempt, reason="provider_failed", now=1001.0)
    expired = await db.write(retention.expire_finished, before=2000.0, now=3000.0)
    assert expired.job_ids == ["old"]
    assert await _owners_left(db, blob_refs.job_owner("old"), blob_refs.job_owner("new")) == [0, 1]


async def test_forget_counts_what_it_deletes(db: Database) -> None:
    user_id = await new_user(db)
    await db.write(
        identities.save, user_id=user_id, name="me", photo_keys=["f" * 64], now=1.0, face_embeddings=[("d", VECTOR)]
    )
    await submit(db, "done", user_id)
    await db.write(embeddings.store, owner=blob_refs.job_owner("done"), embeddings=[("d", VECTOR)] * 2, now=1.0)
    job = await claim(db)
    assert job is not None
    image = jobs.NewImage(0, "e" * 64, "e" * 64, "image/png", 10, 8, 8, likeness=0.9, judge="d")
    assert await db.write(jobs.complete, job_id="done", attempt=job.attempt, images=[image], now=1002.0)
    forgotten = await db.write(history.forget, user_id=user_id)
    assert forgotten is not None
    counts = (forgotten.identities, forgotten.photos, forgotten.embeddings, forgotten.results, forgotten.history)
    assert counts == (1, 1, 3, 1, 1)
    assert sorted(forgotten.freed) == ["e" * 64, "f" * 64]


async def test_stats_show_each_backend_s_mean_likeness_and_its_free_re_renders(db: Database) -> None:
    user_id = await new_user(db)
    for job_id, scores in (("a", [0.9, 0.7]), ("b", [None])):
        await submit(db, job_id, user_id, now=1000.0)
        job = await claim(db)
        assert job is not None and job.id == job_id
        images = [
            jobs.NewImage(i, f"{job_id}{i}" * 32, "x" * 64, "image/png", 10, 8, 8, likeness=score, judge="d")
            for i, score in enumerate(scores)
        ]
        done = await db.write(
            jobs.complete, job_id=job_id, attempt=job.attempt, images=images, backend="fal", now=1001.0
        )
        assert done == JobState.SUCCEEDED
    await db.write(jobs.add_event, job_id="a", kind="likeness_retry", now=1001.0)
    found = await db.read(stats.collect, since=0.0)
    [(count, mean)] = found.likeness_by_backend.values()
    assert count == 2 and abs(mean - 0.8) < 1e-9 and found.likeness_retries == {"fal": 1}
    [image, _second] = await db.read(jobs.images_of, job_id="a")
    assert (image.likeness, image.judge) == (0.9, "d")


async def test_consent_is_recorded_once_and_a_scope_s_safety_policy_can_be_cleared(db: Database) -> None:
    user_id = await new_user(db)
    assert await db.write(users.accept_privacy, user_id=user_id, now=5.0) == 5.0
    assert await db.write(users.accept_privacy, user_id=user_id, now=9.0) == 5.0
    await db.write(scopes.update_scope, scope="telegram:chat:-1", now=1.0, safety_policy="spoiler")
    await db.write(scopes.update_scope, scope="telegram:chat:-1", now=2.0, paused=True)
    scope = await db.read(scopes.get_scope, scope="telegram:chat:-1")
    assert (scope.safety_policy, scope.paused) == ("spoiler", True)
    await db.write(scopes.update_scope, scope="telegram:chat:-1", now=3.0, safety_policy="")
    assert (await db.read(scopes.get_scope, scope="telegram:chat:-1")).safety_policy is None


async def test_a_declined_or_expired_pending_job_takes_its_embeddings_along(db: Database) -> None:
    user_id = await new_user(db)
    for job_id, now in (("declined", 1.0), ("stale", 2.0), ("kept", 5000.0)):
        job = jobs.NewJob(id=job_id, user_id=user_id, params={"prompt": "p"}, cost=2, face_keys=["f" * 64])
        await db.write(pending.put, job=job, now=now)
        await db.write(embeddings.store, owner=blob_refs.job_owner(job_id), embeddings=[("d", VECTOR)], now=now)
    await db.write(pending.decline, job_id="declined", user_id=user_id)
    await db.write(pending.expire, before=1000.0)
    owners = [blob_refs.job_owner(job_id) for job_id in ("declined", "stale", "kept")]
    assert await _owners_left(db, *owners) == [0, 0, 1]
