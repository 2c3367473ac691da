"""Per-scope daily image caps in the store: never passed, even by members submitting at once; a new day resets."""

from __future__ import annotations

import asyncio

import pytest

from storage import scope_caps
from storage.db import Database
from storage.scope_caps import ScopeCapReached

DAY = 86_400.0
NOON = 20_000 * DAY + DAY / 2
GUILD = "discord:guild:77"


async def _take(db: Database, images: int, now: float = NOON) -> bool:
    try:
        await db.write(scope_caps.take, scope=GUILD, images=images, now=now)
    except ScopeCapReached:
        return False
    return True


async def test_concurrent_takes_never_pass_the_cap(db: Database) -> None:
    await db.write(scope_caps.set_cap, scope=GUILD, images=5, now=NOON)
    taken = await asyncio.gather(*(_take(db, 1) for _ in range(12)))
    assert sum(taken) == 5
    assert await db.read(scope_caps.used_today, scope=GUILD, now=NOON) == 5
    assert await _take(db, 1, now=NOON + DAY)  # a new UTC day


async def test_a_job_larger_than_what_is_left_is_refused_whole(db: Database) -> None:
    await db.write(scope_caps.set_cap, scope=GUILD, images=3, now=NOON)
    assert await _take(db, 2)
    with pytest.raises(ScopeCapReached) as refused:
        await db.write(scope_caps.take, scope=GUILD, images=2, now=NOON)
    assert (refused.value.cap, refused.value.used) == (3, 2)
    assert not await _take(db, 4, now=NOON + DAY)  # more than the whole cap, even on a fresh day
    assert await db.read(scope_caps.used_today, scope=GUILD, now=NOON + DAY) == 0


async def test_without_a_cap_nothing_is_counted(db: Database) -> None:
    assert await _take(db, 100)
    await db.write(scope_caps.set_cap, scope=GUILD, images=1, now=NOON)
    await db.write(scope_caps.set_cap, scope=GUILD, images=None, now=NOON)
    assert await _take(db, 100)
    assert await db.read(scope_caps.cap_of, scope=GUILD) is None
