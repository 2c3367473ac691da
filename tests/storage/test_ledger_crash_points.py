"""An exception after any statement of submit or finish leaves the books balanced."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event

from storage import jobs
from storage.db import Database
from storage.states import JobState
from tests.storage.ledger_helpers import claim, credits_of, drift, new_user, submit


class Injected(Exception):
    """The fault the test throws into the middle of a transaction."""


@contextmanager
def fail_after_statement(db: Database, n: int) -> Iterator[list[int]]:
    """Raise after the n-th statement the writer executes (1-based); yields the running count."""
    seen = [0]

    def after(*_args: Any) -> None:
        seen[0] += 1
        if seen[0] == n:
            raise Injected(f"after statement {n}")

    engine = db.engine
    event.listen(engine, "after_cursor_execute", after)
    try:
        yield seen
    finally:
        event.remove(engine, "after_cursor_execute", after)


async def sweep(db: Database, operation: Callable[[], Awaitable[object]], check: Callable[[], Awaitable[None]]) -> int:
    """Run ``operation`` with a fault after statement 1, 2, … until it completes untouched."""
    n = 1
    while True:
        with fail_after_statement(db, n) as seen:
            try:
                await operation()
            except Injected:
                await check()
                n += 1
                continue
        assert seen[0] < n, "the operation finished although a fault was due"
        return n - 1


async def test_submit_interrupted_anywhere_leaves_no_trace(db: Database) -> None:
    user = await new_user(db, credits=3)

    async def check() -> None:
        assert await credits_of(db, user) == (3, 0)
        assert await db.read(jobs.get, job_id="crash") is None
        assert await drift(db) == []

    faults = await sweep(db, lambda: submit(db, "crash", user), check)
    assert faults >= 3  # reserve, insert, ledger at least
    assert await credits_of(db, user) == (3, 1)
    assert await drift(db) == []


@pytest.mark.parametrize("outcome", ["complete", "fail", "cancel"])
async def test_finish_interrupted_anywhere_keeps_the_job_running_and_books_balanced(db: Database, outcome: str) -> None:
    user = await new_user(db, credits=3)
    await submit(db, "fin", user)
    job = await claim(db)
    assert job is not None
    if outcome == "cancel":
        await db.write(jobs.cancel, job_id="fin", now=1001.0)

    async def finish() -> None:
        image = jobs.NewImage(0, "b" * 64, "b" * 64, "image/png", 1, 1, 1)
        if outcome == "complete":
            assert await db.write(jobs.complete, job_id="fin", attempt=1, images=[image], now=1002.0)
        elif outcome == "fail":
            assert await db.write(jobs.fail, job_id="fin", attempt=1, reason="x", now=1002.0)
        else:
            assert await db.write(jobs.finish_cancelled, job_id="fin", attempt=1, now=1002.0)

    async def check() -> None:
        current = await db.read(jobs.get, job_id="fin")
        assert current is not None and current.state == JobState.RUNNING
        assert await credits_of(db, user) == (3, 1)
        assert await drift(db) == []

    assert await sweep(db, finish, check) >= 3
    expected = (2, 0) if outcome == "complete" else (3, 0)
    assert await credits_of(db, user) == expected
    assert await drift(db) == []
