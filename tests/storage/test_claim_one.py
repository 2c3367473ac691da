"""A claim for one named job takes that job or nothing, whatever else waits ahead of it."""

from __future__ import annotations

from storage import jobs
from storage.db import Database
from storage.models import Job
from storage.states import JobState
from tests.storage.ledger_helpers import credits_of, drift, new_user, submit


async def claim_one(db: Database, job_id: str, *, now: float = 1000.0, cap: int = 100) -> Job | None:
    return await db.write_lossy(jobs.claim, worker="cli", lease_s=30, running_cap=cap, now=now, job_id=job_id)


async def test_a_claim_for_one_job_passes_every_other_job_by(db: Database) -> None:
    ann, operator = await new_user(db), await new_user(db)
    await submit(db, "ann-1", ann, now=900.0)  # first in line
    await submit(db, "cli-1", operator, now=950.0)
    claimed = await claim_one(db, "cli-1")
    assert claimed is not None and claimed.id == "cli-1" and claimed.state == JobState.RUNNING
    assert await claim_one(db, "cli-1") is None  # running already
    assert await claim_one(db, "no-such-job") is None
    ann_job = await db.read(jobs.get, job_id="ann-1")
    assert ann_job is not None and (ann_job.state, ann_job.attempt) == (JobState.QUEUED, 0)
    assert await credits_of(db, ann) == (100, 1)
    assert await drift(db) == []


async def test_a_claim_for_one_job_keeps_its_due_time_and_its_owners_cap(db: Database) -> None:
    operator = await new_user(db)
    await submit(db, "cli-1", operator, now=1000.0)
    await submit(db, "cli-2", operator, now=1000.0)
    assert await claim_one(db, "cli-1", now=999.0) is None  # not due yet
    assert await claim_one(db, "cli-1", cap=1) is not None
    assert await claim_one(db, "cli-2", cap=1) is None  # the owner's one running slot is taken
    assert await drift(db) == []
