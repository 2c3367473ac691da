"""Small builders shared by the store tests."""

from __future__ import annotations

import itertools

from storage import jobs, reconcile, users
from storage.db import Database
from storage.models import Job

_users = itertools.count(1)


async def new_user(db: Database, *, credits: int = 100, now: float = 1000.0, platform: str = "telegram") -> int:
    user = await db.write(
        users.ensure_user,
        platform=platform,
        platform_user_id=str(next(_users)),
        now=now,
        welcome_credits=credits,
    )
    assert user.id is not None
    return user.id


async def submit(
    db: Database, job_id: str, user_id: int, *, cost: int = 1, now: float = 1000.0, daily: int = 10_000
) -> Job:
    return await db.write(
        jobs.submit,
        job=jobs.NewJob(id=job_id, user_id=user_id, params={"prompt": "p"}, cost=cost, route=["fake"]),
        now=now,
        daily_jobs_default=daily,
    )


async def claim(
    db: Database, *, worker: str = "w", now: float = 1000.0, lease_s: float = 30, cap: int = 100
) -> Job | None:
    return await db.write(jobs.claim, worker=worker, lease_s=lease_s, running_cap=cap, now=now)


async def drift(db: Database) -> list[reconcile.Drift]:
    return await db.read(reconcile.find_drift)


async def credits_of(db: Database, user_id: int) -> tuple[int, int]:
    """(credits, reserved) of a user."""
    user = await db.read(users.get_user, user_id=user_id)
    assert user is not None
    return user.credits, user.reserved
