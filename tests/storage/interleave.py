"""Forcing an interleaving on PostgreSQL: a transaction held open by the test, and waiting until another
session is blocked on its locks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.db import Database, Operation

T = TypeVar("T")


class OpenTransaction:
    """A transaction the test commits when it chooses; what it wrote holds its row locks until then."""

    def __init__(self, conn: AsyncConnection, pid: int) -> None:
        self.conn = conn
        self.pid = pid

    async def run(self, operation: Operation[T], /, **kwargs: Any) -> T:
        return await self.conn.run_sync(lambda sync: operation(session=sync, **kwargs))

    async def commit(self) -> None:
        await self.conn.commit()


@asynccontextmanager
async def open_transaction(db: Database) -> AsyncIterator[OpenTransaction]:
    assert not db.is_sqlite, "SQLite serialises writers: there is nothing to interleave"
    async with db.async_engine.connect() as conn:
        pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        yield OpenTransaction(conn, int(pid))
        if conn.in_transaction():
            await conn.rollback()


async def blocked_by(db: Database, pid: int) -> int:
    """How many sessions wait for a lock the session ``pid`` holds."""
    async with db.async_engine.connect() as conn:
        found = await conn.execute(
            text("SELECT count(*) FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid))"), {"pid": pid}
        )
        return int(found.scalar_one())


async def until_blocked(db: Database, pid: int, task: asyncio.Task[Any], *, timeout_s: float = 10.0) -> bool:
    """Wait until some session waits on ``pid``'s locks (True), or ``task`` ends without waiting (False)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        if task.done():
            return False
        if await blocked_by(db, pid):
            return True
        await asyncio.sleep(0.02)
    raise TimeoutError("nothing blocked and nothing finished")
