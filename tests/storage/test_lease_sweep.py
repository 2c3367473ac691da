"""The lease sweeper never ends a job whose worker renews its lease at the same moment, in any branch."""

from __future__ import annotations

import asyncio

import pytest

from storage import jobs
from storage.db import Database
from storage.models import Job
from storage.states import JobState
from tests.storage.interleave import open_transaction, until_blocked
from tests.storage.ledger_helpers import credits_of, drift, new_user

POSTGRES_ONLY = pytest.mark.parametrize(
    "store_target", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
START, LEASE_S = 1000.0, 30.0
SWEEP = START + 100.0  # past the first lease


async def _running(db: Database, branch: str) -> Job:
    """A running job whose lease ran out, set up for one branch of the sweeper."""
    user = await new_user(db, credits=10)
    await db.write(
        jobs.submit,
        job=jobs.NewJob(
            id="job",
            user_id=user,
            params={"prompt": "p"},
            cost=1,
            max_attempts=1 if branch == "out_of_attempts" else 3,
            deadline_s=50.0 if branch == "past_deadline" else None,
        ),
        now=START,
        daily_jobs_default=100,
    )
    job = await db.write(jobs.claim, worker="w1", lease_s=LEASE_S, running_cap=10, now=START)
    assert job is not None
    if branch == "cancel_requested":
        assert await db.write(jobs.cancel, job_id="job", now=START + 1) == jobs.CancelOutcome.REQUESTED
    return job


@POSTGRES_ONLY
@pytest.mark.parametrize("branch", ["cancel_requested", "out_of_attempts", "past_deadline", "back_to_queue"])
async def test_a_lease_renewed_while_the_sweeper_looks_is_kept(db: Database, branch: str) -> None:
    job = await _running(db, branch)
    async with open_transaction(db) as worker:
        # The worker's heartbeat has renewed the lease but not committed yet when the sweeper runs.
        beat = await worker.run(jobs.heartbeat, job_id="job", attempt=job.attempt, lease_s=LEASE_S, now=SWEEP)
        assert beat is not None
        sweeping = asyncio.create_task(db.write(jobs.expire_leases, now=SWEEP))
        if await until_blocked(db, worker.pid, sweeping):  # the sweeper waits for the worker's row
            await worker.commit()
            swept = await sweeping
        else:  # the sweeper passed the worker's row by
            swept = await sweeping
            await worker.commit()
    assert swept == []
    kept = await db.read(jobs.get, job_id="job")
    assert kept is not None and (kept.state, kept.attempt, kept.lease_until) == (
        JobState.RUNNING,
        job.attempt,
        SWEEP + LEASE_S,
    )
    # The worker still owns the job and ends it itself.
    assert await db.write(jobs.fail, job_id="job", attempt=job.attempt, reason="provider_failed", now=SWEEP + 1)
    assert await drift(db) == []


@pytest.mark.parametrize("branch", ["cancel_requested", "out_of_attempts", "past_deadline", "back_to_queue"])
async def test_a_lease_that_ran_out_is_swept_in_each_branch(db: Database, branch: str) -> None:
    job = await _running(db, branch)
    assert await db.write(jobs.expire_leases, now=START + LEASE_S - 1) == []
    assert await db.write(jobs.expire_leases, now=SWEEP) == ["job"]
    swept = await db.read(jobs.get, job_id="job")
    assert swept is not None
    expected = {
        "cancel_requested": JobState.CANCELLED,
        "out_of_attempts": JobState.FAILED,
        "past_deadline": JobState.FAILED,
        "back_to_queue": JobState.QUEUED,
    }[branch]
    assert swept.state == expected
    # The old attempt cannot end the job any more.
    assert not await db.write(jobs.fail, job_id="job", attempt=job.attempt, reason="provider_failed", now=SWEEP + 1)
    assert await credits_of(db, job.user_id) == (10, 1 if expected == JobState.QUEUED else 0)
    assert await drift(db) == []


@POSTGRES_ONLY
async def test_a_sweep_waits_for_a_transaction_holding_the_user_instead_of_deadlocking_with_it(db: Database) -> None:
    # A user's running job whose worker died, and a queued one.
    user = await new_user(db, credits=10)
    for job_id in ("running", "queued"):
        await db.write(
            jobs.submit,
            job=jobs.NewJob(id=job_id, user_id=user, params={"prompt": "p"}, cost=1),
            now=START,
            daily_jobs_default=100,
        )
        if job_id == "running":
            assert await db.write(jobs.claim, worker="w1", lease_s=LEASE_S, running_cap=10, now=START) is not None
    async with open_transaction(db) as ban:
        # A ban cancels the user's jobs as cancel_all_of_user does: the queued ones first (the refund holds the
        # user's row), then the running ones are asked to stop.
        assert await ban.run(jobs.cancel, job_id="queued", now=SWEEP) == jobs.CancelOutcome.CANCELLED
        sweeping = asyncio.create_task(db.write(jobs.expire_leases, now=SWEEP))
        assert await until_blocked(db, ban.pid, sweeping)  # the sweep waits for the user's row, holding no job
        assert await ban.run(jobs.cancel, job_id="running", now=SWEEP) == jobs.CancelOutcome.REQUESTED
        await ban.commit()
    assert await sweeping == ["running"]
    for job_id in ("running", "queued"):
        ended = await db.read(jobs.get, job_id=job_id)
        assert ended is not None and ended.state == JobState.CANCELLED
    assert await credits_of(db, user) == (10, 0)
    assert await drift(db) == []
