"""Daily budgets in the store: holds granted within a budget even when taken at once, spend by day, alerts once."""

from __future__ import annotations

import asyncio

from storage import budget, jobs, pending
from storage.budget import TOTAL, Use
from storage.db import Database
from storage.models import Job
from tests.storage.ledger_helpers import claim, credits_of, drift, new_user, submit

DAY = 86_400.0
NOON = 20_000 * DAY + DAY / 2  # a moment well inside one UTC day


async def _running(db: Database, count: int, *, now: float = NOON) -> list[Job]:
    user = await new_user(db, credits=1000, now=now)
    for number in range(count):
        await submit(db, f"job-{number}", user, now=now)
    claimed = [await claim(db, now=now) for _ in range(count)]
    assert all(job is not None for job in claimed)
    return [job for job in claimed if job is not None]


async def _hold(db: Database, job: Job, usd: float, limits: dict[str, float], now: float = NOON) -> bool:
    outcome = await db.write(
        budget.hold, job_id=job.id, backend="fal-flux-pulid", estimate_usd=usd, limits=limits, now=now
    )
    return outcome.granted


async def test_concurrent_holds_never_pass_the_budget(db: Database) -> None:
    running = await _running(db, 12)
    granted = await asyncio.gather(*(_hold(db, job, 1.0, {"fal-flux-pulid": 5.0}) for job in running))
    assert sum(granted) == 5
    own, total = await db.read(budget.usage, backend="fal-flux-pulid", now=NOON)
    assert (own.spent_usd, own.held_usd) == (0.0, 5.0)
    assert total.held_usd == 5.0


async def test_the_total_budget_counts_every_backend(db: Database) -> None:
    first, second, third = await _running(db, 3)
    limits = {TOTAL: 2.5}
    assert await _hold(db, first, 1.0, limits)
    outcome = await db.write(
        budget.hold, job_id=second.id, backend="wavespeed-flux-pulid", estimate_usd=1.0, limits=limits, now=NOON
    )
    assert outcome.granted
    refused = await db.write(
        budget.hold, job_id=third.id, backend="wavespeed-flux-pulid", estimate_usd=1.0, limits=limits, now=NOON
    )
    assert (refused.granted, refused.refused_by) == (False, TOTAL)


async def test_a_finished_job_counts_its_recorded_spend_instead_of_its_hold(db: Database) -> None:
    first, second, third = await _running(db, 3)
    limits = {"fal-flux-pulid": 2.0}
    assert await _hold(db, first, 0.5, limits)
    assert await _hold(db, second, 0.5, limits)
    # The first ends costing more than estimated: its actual spend replaces its hold in the same transaction.
    await db.write(
        jobs.complete, job_id=first.id, attempt=first.attempt, images=[], backend="fal-flux-pulid",
        spend_usd=1.4, now=NOON + 1,
    )  # fmt: skip
    own, _ = await db.read(budget.usage, backend="fal-flux-pulid", now=NOON + 2)
    assert (own.spent_usd, own.held_usd) == (1.4, 0.5)
    assert not await _hold(db, third, 0.5, limits, now=NOON + 2)
    # A hold of a job that stopped running (failed, its lease lost) no longer counts.
    await db.write(jobs.fail, job_id=second.id, attempt=second.attempt, reason="provider_failed", now=NOON + 3)
    assert await _hold(db, third, 0.5, limits, now=NOON + 4)
    # The next UTC day starts from nothing spent.
    tomorrow, _ = await db.read(budget.usage, backend="fal-flux-pulid", now=NOON + DAY)
    assert (tomorrow.spent_usd, tomorrow.held_usd) == (0.0, 0.5)
    assert await drift(db) == []


async def test_a_threshold_is_noted_once_per_budget_and_day(db: Database) -> None:
    use = Use("fal-flux-pulid", 4.0, 0.1, 5.0)
    assert await db.write(budget.reach, use=use, threshold=80, now=NOON)
    assert not await db.write(budget.reach, use=use, threshold=80, now=NOON + 60)
    assert await db.write(budget.reach, use=use, threshold=100, now=NOON + 60)
    assert await db.write(budget.reach, use=use, threshold=80, now=NOON + DAY)
    unsent = await db.read(budget.unsent_alerts)
    assert [(a.day, a.threshold) for a in unsent] == [
        ("2024-10-04", 80),
        ("2024-10-04", 100),
        ("2024-10-05", 80),
    ]
    first = unsent[0]
    claimed = await asyncio.gather(
        *(
            db.write(budget.mark_sent, day=first.day, budget=first.budget, threshold=first.threshold, now=NOON + 61)
            for _ in range(4)
        )
    )
    assert sum(claimed) == 1
    assert len(await db.read(budget.unsent_alerts)) == 2


async def test_a_pending_job_is_submitted_once_however_often_it_is_confirmed(db: Database) -> None:
    user = await new_user(db, credits=10)
    job = jobs.NewJob(id="costly", user_id=user, params={"prompt": "p", "num_images": 3}, cost=3, face_keys=["k1"])
    await db.write(pending.put, job=job, now=NOON)
    assert await credits_of(db, user) == (10, 0)  # nothing held while it waits
    target = {"platform": "telegram", "chat_id": 1}
    confirms = await asyncio.gather(
        *(
            db.write(
                pending.confirm, job_id="costly", user_id=user, reply_target=target, now=NOON + 1, daily_jobs_default=9
            )
            for _ in range(3)
        ),
        return_exceptions=True,
    )
    assert [result for result in confirms if result is True] == [True]
    assert await credits_of(db, user) == (10, 3)
    queued = await db.read(jobs.get, job_id="costly")
    assert queued is not None and queued.reply_target == target and queued.face_keys == ["k1"]
    assert await db.write(pending.decline, job_id="costly", user_id=user) == []
    assert await drift(db) == []


async def test_another_user_cannot_confirm_or_decline(db: Database) -> None:
    owner = await new_user(db, credits=10)
    stranger = await new_user(db, credits=10)
    await db.write(pending.put, job=jobs.NewJob(id="mine", user_id=owner, params={}, cost=2), now=NOON)
    assert not await db.write(
        pending.confirm, job_id="mine", user_id=stranger, reply_target={}, now=NOON, daily_jobs_default=9
    )
    assert await db.read(pending.get, job_id="mine") is not None
    await db.write(pending.decline, job_id="mine", user_id=owner)
    assert await db.read(pending.get, job_id="mine") is None


async def test_unconfirmed_jobs_expire_and_free_their_photos(db: Database) -> None:
    user = await new_user(db, credits=10)
    await db.write(
        pending.put, job=jobs.NewJob(id="old", user_id=user, params={}, cost=2, face_keys=["k-old"]), now=NOON
    )
    await db.write(
        pending.put, job=jobs.NewJob(id="new", user_id=user, params={}, cost=2, face_keys=["k-new"]), now=NOON + DAY
    )
    assert await db.write(pending.expire, before=NOON + 1) == ["k-old"]
    assert await db.read(pending.get, job_id="old") is None
    assert await db.read(pending.get, job_id="new") is not None
