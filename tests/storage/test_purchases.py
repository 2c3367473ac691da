"""Bought credits on the ledger: one credit per charge however often it arrives, refunds that take them back."""

from __future__ import annotations

import asyncio

from sqlalchemy import select
from sqlalchemy.engine import Connection

from storage import purchases
from storage import tables as t
from storage.db import Database
from storage.purchases import NewPurchase, RefundStep
from tests.storage.ledger_helpers import claim, credits_of, drift, new_user, submit


def _stars(user_id: int, charge: str = "stxCHARGE1", credits: int = 50) -> NewPurchase:
    return NewPurchase("telegram", charge, user_id, credits, 100, "XTR", f"pack:{credits}:100", "")


def _ledger(*, session: Connection, user_id: int) -> list[tuple[str, int, str]]:
    rows = session.execute(
        select(t.ledger.c.kind, t.ledger.c.amount, t.ledger.c.actor)
        .where(t.ledger.c.user_id == user_id, t.ledger.c.job_id.is_(None))
        .order_by(t.ledger.c.id)
    )
    return [(str(kind), int(amount), str(actor)) for kind, amount, actor in rows]


async def test_a_charge_credits_once_however_often_it_arrives(db: Database) -> None:
    user = await new_user(db, credits=10)
    first = await db.write(purchases.credit, purchase=_stars(user), now=1000.0)
    again = await db.write(purchases.credit, purchase=_stars(user), now=1005.0)
    assert (first.new, first.balance) == (True, 60)
    assert (again.new, again.balance) == (False, 60)
    assert again.purchase.id == first.purchase.id
    assert await credits_of(db, user) == (60, 0)
    # The welcome grant, then the purchase with its source; the repeat left no trace.
    assert await db.read(_ledger, user_id=user) == [("grant", 10, ""), ("purchase", 50, "telegram-sale")]
    assert await drift(db) == []


async def test_concurrent_deliveries_of_one_charge_credit_once(db: Database) -> None:
    user = await new_user(db, credits=0)
    results = await asyncio.gather(
        *(db.write(purchases.credit, purchase=_stars(user), now=1000.0 + i) for i in range(8))
    )
    assert sum(result.new for result in results) == 1
    assert await credits_of(db, user) == (50, 0)
    assert await drift(db) == []


async def test_a_refund_takes_the_credits_back_and_is_done_once(db: Database) -> None:
    user = await new_user(db, credits=0)
    await db.write(purchases.credit, purchase=_stars(user), now=1000.0)
    start = await db.write(purchases.start_refund, charge_id="stxCHARGE1", force=False, actor="admin", now=1001.0)
    assert (start.step, start.removed) == (RefundStep.STARTED, 50)
    assert await credits_of(db, user) == (0, 0)
    # Asked again before the platform answered: the credits are not taken twice.
    retry = await db.write(purchases.start_refund, charge_id="stxCHARGE1", force=False, actor="admin", now=1002.0)
    assert (retry.step, retry.removed) == (RefundStep.RETRY, 50)
    assert start.purchase is not None and start.purchase.id is not None
    await db.write(purchases.finish_refund, purchase_id=start.purchase.id, now=1003.0)
    done = await db.write(purchases.start_refund, charge_id="stxCHARGE1", force=False, actor="admin", now=1004.0)
    assert done.step is RefundStep.ALREADY
    assert await credits_of(db, user) == (0, 0)
    assert await drift(db) == []
    unknown = await db.write(purchases.start_refund, charge_id="nope", force=False, actor="admin", now=1005.0)
    assert unknown.step is RefundStep.UNKNOWN


async def test_a_refund_of_spent_credits_is_refused_unless_forced(db: Database) -> None:
    user = await new_user(db, credits=0)
    await db.write(purchases.credit, purchase=_stars(user), now=1000.0)
    await submit(db, "spent", user, cost=30)
    job = await claim(db)
    assert job is not None
    # Credits held for a job in progress are not free either.
    refused = await db.write(purchases.start_refund, charge_id="stxCHARGE1", force=False, actor="admin", now=1001.0)
    assert (refused.step, refused.available) == (RefundStep.SPENT, 20)
    assert await credits_of(db, user) == (50, 30)
    forced = await db.write(purchases.start_refund, charge_id="stxCHARGE1", force=True, actor="admin", now=1002.0)
    assert (forced.step, forced.removed) == (RefundStep.STARTED, 20)
    assert await credits_of(db, user) == (30, 30)
    assert await drift(db) == []


async def test_a_refund_the_platform_refuses_gives_the_credits_back(db: Database) -> None:
    user = await new_user(db, credits=5)
    await db.write(purchases.credit, purchase=_stars(user), now=1000.0)
    start = await db.write(purchases.start_refund, charge_id="stxCHARGE1", force=False, actor="admin", now=1001.0)
    assert start.purchase is not None and start.purchase.id is not None
    assert await credits_of(db, user) == (5, 0)
    await db.write(purchases.undo_refund, purchase_id=start.purchase.id, actor="admin", now=1002.0)
    assert await credits_of(db, user) == (55, 0)
    found = await db.read(purchases.find, platform="telegram", charge_id="stxCHARGE1")
    assert found is not None and (found.state, found.credits_removed) == (purchases.PAID, 0)
    assert await drift(db) == []


async def test_recent_purchases_newest_first(db: Database) -> None:
    user = await new_user(db, credits=0)
    for number in range(4):
        await db.write(purchases.credit, purchase=_stars(user, f"c{number}", 10 + number), now=1000.0 + number)
    found = await db.read(purchases.recent, user_id=user, limit=3)
    assert [purchase.charge_id for purchase in found] == ["c3", "c2", "c1"]
