"""The job ledger's transitions, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest

from storage import delivery, jobs, users
from storage.db import Database
from storage.errors import DuplicateJob, QuotaRefused, RefusalReason
from storage.states import DeliveryState, JobState
from tests.storage.ledger_helpers import claim, credits_of, drift, new_user, submit


async def test_submit_claim_complete_charges_once(db: Database) -> None:
    user = await new_user(db, credits=5)
    await submit(db, "job-1", user, cost=2)
    assert await credits_of(db, user) == (5, 2)
    job = await claim(db)
    assert job is not None and job.id == "job-1" and job.attempt == 1 and job.state == JobState.RUNNING
    image = jobs.NewImage(0, "a" * 64, "a" * 64, "image/png", 10, 8, 8)
    assert await db.write(jobs.complete, job_id="job-1", attempt=1, images=[image], now=1001.0)
    # A second completion of the same attempt changes nothing.
    assert not await db.write(jobs.complete, job_id="job-1", attempt=1, images=[], now=1002.0)
    assert await credits_of(db, user) == (3, 0)
    done = await db.read(jobs.get, job_id="job-1")
    assert done is not None and done.state == JobState.SUCCEEDED and done.delivery_state == DeliveryState.PENDING
    assert await drift(db) == []


async def test_same_idempotency_key_twice_gives_one_job_one_reservation(db: Database) -> None:
    user = await new_user(db, credits=5)
    await submit(db, "dup", user)
    with pytest.raises(DuplicateJob):
        await submit(db, "dup", user)
    assert await credits_of(db, user) == (5, 1)
    assert await drift(db) == []


async def test_concurrent_duplicate_submits_make_one_job(db: Database) -> None:
    user = await new_user(db, credits=5)
    results = await asyncio.gather(*(submit(db, "same", user) for _ in range(8)), return_exceptions=True)
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(isinstance(r, DuplicateJob) for r in results if isinstance(r, BaseException))
    assert await credits_of(db, user) == (5, 1)


async def test_fifty_concurrent_submits_against_ten_credits(db: Database) -> None:
    user = await new_user(db, credits=10)
    results = await asyncio.gather(*(submit(db, f"j{i}", user) for i in range(50)), return_exceptions=True)
    accepted = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(accepted) == 10
    assert len(refused) == 40
    assert all(isinstance(r, QuotaRefused) and r.reason == RefusalReason.NO_CREDITS for r in refused)
    assert all(r.available == 0 and r.needed == 1 for r in refused if isinstance(r, QuotaRefused))
    assert await credits_of(db, user) == (10, 10)
    assert await drift(db) == []


async def test_daily_limit_and_ban_refuse_without_writing(db: Database) -> None:
    user = await new_user(db, credits=100)
    for i in range(3):
        await submit(db, f"d{i}", user, daily=3)
    with pytest.raises(QuotaRefused) as refused:
        await submit(db, "d3", user, daily=3)
    assert refused.value.reason == RefusalReason.DAILY_LIMIT and refused.value.limit == 3
    # The next UTC day starts a fresh count.
    await submit(db, "next-day", user, daily=3, now=1000.0 + 86_400)
    await db.write(users.set_user_fields, user_id=user, banned=True)
    with pytest.raises(QuotaRefused) as banned:
        await submit(db, "banned", user, now=1000.0 + 86_400)
    assert banned.value.reason == RefusalReason.BANNED
    assert await credits_of(db, user) == (100, 4)


async def test_cancel_in_each_state(db: Database) -> None:
    user = await new_user(db, credits=10)
    await submit(db, "queued", user)
    await submit(db, "running", user)
    assert await db.write(jobs.cancel, job_id="queued", now=1001.0) == jobs.CancelOutcome.CANCELLED
    assert await credits_of(db, user) == (10, 1)  # refunded at once
    job = await claim(db)
    assert job is not None and job.id == "running"
    assert await db.write(jobs.cancel, job_id="running", now=1001.0) == jobs.CancelOutcome.REQUESTED
    beat = await db.write(jobs.heartbeat, job_id="running", attempt=1, lease_s=30, now=1002.0)
    assert beat is not None and beat.cancel_requested
    assert await db.write(jobs.finish_cancelled, job_id="running", attempt=1, now=1003.0)
    # Terminal: cancelling again is a no-op and refunds nothing more.
    assert await db.write(jobs.cancel, job_id="running", now=1004.0) == jobs.CancelOutcome.NOOP
    assert await db.write(jobs.cancel, job_id="queued", now=1004.0) == jobs.CancelOutcome.NOOP
    assert await credits_of(db, user) == (10, 0)
    assert await drift(db) == []


async def test_stale_attempt_is_rejected_after_lease_expiry(db: Database) -> None:
    user = await new_user(db)
    await submit(db, "lease", user)
    first = await claim(db, worker="a", now=1000.0, lease_s=5)
    assert first is not None and first.attempt == 1
    assert await db.write(jobs.expire_leases, now=1006.0) == ["lease"]
    second = await claim(db, worker="b", now=1006.0)
    assert second is not None and second.attempt == 2
    # The first worker wakes up: every transition of its attempt is refused.
    assert await db.write(jobs.heartbeat, job_id="lease", attempt=1, lease_s=5, now=1007.0) is None
    assert not await db.write(jobs.complete, job_id="lease", attempt=1, images=[], now=1007.0)
    assert not await db.write(jobs.fail, job_id="lease", attempt=1, reason="x", now=1007.0)
    assert await db.write(jobs.complete, job_id="lease", attempt=2, images=[], now=1008.0)
    assert await credits_of(db, user) == (99, 0)
    assert await drift(db) == []


async def test_retry_later_then_fail_refunds(db: Database) -> None:
    user = await new_user(db, credits=3)
    await submit(db, "r", user)
    job = await claim(db, now=1000.0)
    assert job is not None
    assert await db.write(jobs.retry_later, job_id="r", attempt=1, run_after=1010.0, reason="429", now=1000.0)
    assert await claim(db, now=1005.0) is None  # not due yet
    again = await claim(db, now=1010.0)
    assert again is not None and again.attempt == 2
    assert await db.write(jobs.fail, job_id="r", attempt=2, reason="provider_failed", now=1011.0)
    assert await credits_of(db, user) == (3, 0)
    assert await drift(db) == []


async def test_lease_expiry_with_attempts_exhausted_fails_and_refunds(db: Database) -> None:
    user = await new_user(db, credits=3)
    await submit(db, "poison", user)
    for attempt in range(1, 4):
        job = await claim(db, now=1000.0 * attempt, lease_s=1)
        assert job is not None and job.attempt == attempt
        await db.write(jobs.expire_leases, now=1000.0 * attempt + 2)
    job = await db.read(jobs.get, job_id="poison")
    assert job is not None and job.state == JobState.FAILED and job.error == "lease_expired"
    assert await credits_of(db, user) == (3, 0)


async def test_fairness_newcomer_claimed_within_two_claims(db: Database) -> None:
    heavy = await new_user(db, credits=1000)
    light = await new_user(db, credits=10)
    for i in range(100):
        await submit(db, f"a{i:03}", heavy, now=1000.0 + i * 0.001)
    claimed = [await claim(db, now=1001.0) for _ in range(10)]
    assert all(job is not None and job.user_id == heavy for job in claimed)
    await submit(db, "b0", light, now=1002.0)
    next_two = [await claim(db, now=1003.0) for _ in range(2)]
    assert "b0" in {job.id for job in next_two if job is not None}


async def test_running_cap_is_filtered_inside_the_claim(db: Database) -> None:
    busy = await new_user(db, credits=100)
    other = await new_user(db, credits=100)
    for i in range(5):
        await submit(db, f"busy{i}", busy)
    await submit(db, "other", other, now=1000.5)
    got = [await claim(db, cap=2, now=1001.0) for _ in range(4)]
    ids = [job.id for job in got if job is not None]
    # Two of the busy user's jobs, then the other user's job, then nothing: the cap holds.
    assert len(ids) == 3 and "other" in ids


async def test_queue_position(db: Database) -> None:
    a = await new_user(db)
    b = await new_user(db)
    await submit(db, "a1", a)
    await submit(db, "a2", a)
    await submit(db, "b1", b)
    positions = {j: await db.read(jobs.queue_position, job_id=j) for j in ("a1", "a2", "b1")}
    assert positions["a1"] == 1
    assert sorted(positions.values()) == [1, 2, 3]
    await claim(db)
    assert await db.read(jobs.queue_position, job_id="a1") is None


async def test_delivery_marked_once(db: Database) -> None:
    user = await new_user(db)
    await submit(db, "d", user)
    await claim(db)
    await db.write(jobs.complete, job_id="d", attempt=1, images=[], now=1001.0)
    pending = await db.read(delivery.pending_deliveries, platforms=["telegram"])
    assert [job.id for job in pending] == ["d"]
    assert await db.write(delivery.mark_delivery, job_id="d", state=DeliveryState.DELIVERED, path="reply", now=1002.0)
    assert not await db.write(
        delivery.mark_delivery, job_id="d", state=DeliveryState.DELIVERED, path="reply", now=1003.0
    )


async def test_concurrent_claimers_never_pass_the_running_cap(db: Database) -> None:
    user = await new_user(db, credits=100)
    for i in range(10):
        await submit(db, f"cap{i}", user)
    claims = await asyncio.gather(
        *(db.write_lossy(jobs.claim, worker=f"w{n}", lease_s=30, running_cap=2, now=1001.0) for n in range(10))
    )
    assert len([job for job in claims if job is not None]) == 2
    assert await drift(db) == []


async def test_reconciler_reports_drift(db: Database) -> None:
    from sqlalchemy import update

    from storage import tables

    user = await new_user(db, credits=5)
    await submit(db, "drifting", user)
    assert await drift(db) == []

    def tamper(*, session: object) -> None:
        session.execute(update(tables.users).where(tables.users.c.id == user).values(credits=7, reserved=0))  # type: ignore[attr-defined]

    await db.write(tamper)
    found = {(d.kind, d.expected, d.found) for d in await drift(db)}
    assert found == {("reserved", 1, 0), ("credits", 5, 7)}
