"""Quota edges: a daily limit of zero, taking credits away, and the reconciler's balance check."""

from __future__ import annotations

import pytest
from sqlalchemy import update
from sqlalchemy.engine import Connection

from storage import jobs, quota, scopes, users
from storage import tables as t
from storage.db import Database
from storage.errors import QuotaRefused, RefusalReason
from storage.states import LedgerKind
from tests.storage.ledger_helpers import claim, credits_of, drift, new_user, submit

DAY_S = 86_400.0


async def test_a_daily_limit_of_zero_refuses_even_the_first_job_of_the_day(db: Database) -> None:
    user = await new_user(db, credits=10)
    await db.write(users.set_user_fields, user_id=user, daily_jobs_limit=0)
    with pytest.raises(QuotaRefused) as refused:
        await submit(db, "first", user, daily=20)
    assert (refused.value.reason, refused.value.limit) == (RefusalReason.DAILY_LIMIT, 0)
    # Nor on a later day, once a job was counted on an earlier one.
    await db.write(users.set_user_fields, user_id=user, daily_jobs_limit=None)
    await submit(db, "allowed", user, daily=20)
    await db.write(users.set_user_fields, user_id=user, daily_jobs_limit=0)
    with pytest.raises(QuotaRefused):
        await submit(db, "next-day", user, daily=20, now=1000.0 + DAY_S)
    assert await credits_of(db, user) == (10, 1)


async def test_a_global_limit_of_zero_is_the_limit_refused_with(db: Database) -> None:
    user = await new_user(db, credits=10)
    await db.write(scopes.update_scope, scope=scopes.GLOBAL_SCOPE, now=1000.0, daily_jobs=0)
    with pytest.raises(QuotaRefused) as refused:
        await submit(db, "first", user, daily=20)
    assert (refused.value.reason, refused.value.limit) == (RefusalReason.DAILY_LIMIT, 0)
    assert await db.read(quota.daily_limit, user_id=user, daily_jobs_default=20) == 0
    # A user's own limit wins over the global one.
    await db.write(users.set_user_fields, user_id=user, daily_jobs_limit=2)
    assert await db.read(quota.daily_limit, user_id=user, daily_jobs_default=20) == 2
    await submit(db, "own-limit", user, daily=20)


async def test_taking_away_more_than_the_free_balance_is_refused_and_changes_nothing(db: Database) -> None:
    user = await new_user(db, credits=10)
    await submit(db, "held", user, cost=4)
    with pytest.raises(quota.TakeAwayRefused) as refused:
        await db.write(quota.grant, user_id=user, amount=-7, actor="admin", now=1001.0)
    assert refused.value.available == 6
    assert await credits_of(db, user) == (10, 4)

    assert await db.write(quota.grant, user_id=user, amount=-6, actor="admin", now=1002.0) == (-6, 4)
    job = await claim(db)
    assert job is not None
    assert await db.write(jobs.complete, job_id=job.id, attempt=job.attempt, images=[], now=1003.0)
    # The held job was paid from what the take-away left: never below zero.
    assert await credits_of(db, user) == (0, 0)
    assert await drift(db) == []


def _overdraw(*, session: Connection, user_id: int, amount: int) -> None:
    """A balance pushed below zero behind the ledger's back, its movement recorded so the sums agree."""
    session.execute(update(t.users).where(t.users.c.id == user_id).values(credits=t.users.c.credits - amount))
    quota.record_entry(session, user_id, None, LedgerKind.ADJUST, -amount, 1001.0, note="test")


async def test_the_reconciler_reports_a_negative_balance(db: Database) -> None:
    user = await new_user(db, credits=2)
    await db.write(_overdraw, user_id=user, amount=5)
    found = await drift(db)
    assert [(d.kind, d.user_id, d.expected, d.found) for d in found] == [("negative_balance", user, 0, -3)]


async def test_the_reconciler_reports_credits_below_what_is_held(db: Database) -> None:
    user = await new_user(db, credits=5)
    await submit(db, "held", user, cost=4)
    await db.write(_overdraw, user_id=user, amount=3)
    found = await drift(db)
    assert [(d.kind, d.user_id, d.expected, d.found) for d in found] == [("negative_balance", user, 0, -2)]
