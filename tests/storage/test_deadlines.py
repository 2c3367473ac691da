"""Queued jobs past their deadline end failed and refunded; nothing else is touched."""

from __future__ import annotations

from storage import jobs
from storage.db import Database
from storage.states import DeliveryState, JobState
from tests.storage.ledger_helpers import claim, credits_of, drift, new_user


async def _submit(db: Database, job_id: str, user: int, deadline_s: float | None) -> None:
    await db.write(
        jobs.submit,
        job=jobs.NewJob(id=job_id, user_id=user, params={"prompt": "p"}, cost=2, deadline_s=deadline_s),
        now=1000.0,
        daily_jobs_default=100,
    )


async def test_only_queued_jobs_past_their_deadline_are_failed_and_refunded(db: Database) -> None:
    user = await new_user(db, credits=10)
    await _submit(db, "running", user, 60)
    assert (job := await claim(db)) is not None and job.id == "running"
    await _submit(db, "overdue", user, 60)
    await _submit(db, "in-time", user, 600)
    await _submit(db, "no-deadline", user, None)

    assert await db.write(jobs.expire_deadlines, now=1059.0) == []
    assert await db.write(jobs.expire_deadlines, now=1060.0) == ["overdue"]
    assert await db.write(jobs.expire_deadlines, now=1060.0) == []  # once only
    overdue = await db.read(jobs.get, job_id="overdue")
    assert overdue is not None
    assert (overdue.state, overdue.error, overdue.delivery_state) == (
        JobState.FAILED,
        "deadline",
        DeliveryState.PENDING,
    )
    for job_id, state in (
        ("running", JobState.RUNNING),
        ("in-time", JobState.QUEUED),
        ("no-deadline", JobState.QUEUED),
    ):
        kept = await db.read(jobs.get, job_id=job_id)
        assert kept is not None and kept.state == state
    assert await credits_of(db, user) == (10, 6)
    # A cancel that comes late finds the job ended.
    assert await db.write(jobs.cancel, job_id="overdue", now=1061.0) == jobs.CancelOutcome.NOOP
    assert await drift(db) == []
