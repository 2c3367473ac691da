"""Forgetting a user: everything personal goes, and a job submitted meanwhile is never lost."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import update
from sqlalchemy.engine import Connection

from storage import history, identities, jobs, users
from storage import tables as t
from storage.db import Database
from storage.states import JobState
from tests.storage.interleave import open_transaction, until_blocked
from tests.storage.ledger_helpers import claim, credits_of, drift, new_user, submit

POSTGRES_ONLY = pytest.mark.parametrize(
    "store_target", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)


async def _finished_job(db: Database, user: int, job_id: str) -> None:
    await submit(db, job_id, user)
    job = await claim(db)
    assert job is not None and job.id == job_id
    assert await db.write(jobs.fail, job_id=job_id, attempt=job.attempt, reason="provider_failed", now=1001.0)


async def test_forget_deletes_history_faces_and_the_display_name(db: Database) -> None:
    user_id = await new_user(db, credits=10)
    await db.write(users.set_user_fields, user_id=user_id, display_name="Ann Example")
    await db.write(identities.save, user_id=user_id, name="me", photo_keys=["f" * 64], now=1000.0)
    await _finished_job(db, user_id, "old")

    forgotten = await db.write(history.forget, user_id=user_id)
    assert forgotten is not None and forgotten.freed == ["f" * 64]
    assert (forgotten.identities, forgotten.photos, forgotten.results, forgotten.history) == (1, 1, 0, 1)
    assert await db.read(jobs.get, job_id="old") is None
    assert await db.read(identities.list_identities, user_id=user_id) == []
    user = await db.read(users.get_user, user_id=user_id)
    assert user is not None and user.display_name == ""
    assert (user.credits, user.reserved) == (10, 0)  # the balance is the operator's account: it stays


async def test_forget_refuses_while_a_job_is_unfinished_and_changes_nothing(db: Database) -> None:
    user_id = await new_user(db, credits=10)
    await db.write(users.set_user_fields, user_id=user_id, display_name="Ann Example")
    await _finished_job(db, user_id, "old")
    await submit(db, "queued", user_id)
    assert await db.write(history.forget, user_id=user_id) is None
    assert await db.read(jobs.get, job_id="old") is not None
    user = await db.read(users.get_user, user_id=user_id)
    assert user is not None and user.display_name == "Ann Example"


def _hold_identities(*, session: Connection, user_id: int) -> None:
    """Lock the user's identity rows, as a concurrent face change would."""
    session.execute(
        update(t.identities).where(t.identities.c.user_id == user_id).values(is_default=t.identities.c.is_default)
    )


@POSTGRES_ONLY
async def test_forget_racing_a_new_job_keeps_the_job_and_its_reservation(db: Database) -> None:
    user_id = await new_user(db, credits=10)
    await db.write(identities.save, user_id=user_id, name="me", photo_keys=["f" * 64], now=1000.0)
    await _finished_job(db, user_id, "old")

    # Another session changes a face and submits a job; forget starts before it commits and has to wait for
    # a lock it holds, so the new job is committed by the time forget looks further.
    async with open_transaction(db) as racer:
        await racer.run(_hold_identities, user_id=user_id)
        await racer.run(
            jobs.submit,
            job=jobs.NewJob(id="new", user_id=user_id, params={"prompt": "p"}, cost=1, face_keys=["f" * 64]),
            now=1002.0,
            daily_jobs_default=100,
        )
        forgetting = asyncio.create_task(db.write(history.forget, user_id=user_id))
        assert await until_blocked(db, racer.pid, forgetting)
        await racer.commit()
    assert await forgetting is None  # a job is in progress now: nothing is forgotten yet

    new = await db.read(jobs.get, job_id="new")
    assert new is not None and new.state == JobState.QUEUED
    assert await credits_of(db, user_id) == (10, 1)
    assert await drift(db) == []
    # Once it is finished, forgetting goes through.
    job = await claim(db, now=1003.0)
    assert job is not None and job.id == "new"
    assert await db.write(jobs.fail, job_id="new", attempt=job.attempt, reason="provider_failed", now=1004.0)
    forgotten = await db.write(history.forget, user_id=user_id)
    assert forgotten is not None and forgotten.freed == ["f" * 64]
    assert await drift(db) == []
