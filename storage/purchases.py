"""Bought credits: each platform charge credits its user exactly once, and a refund takes the credits back.

A purchase row is keyed by (platform, charge id), so a payment update delivered twice, or again after a
restart, finds its row and credits nothing. The credits move in the same transaction as the row, with a
ledger entry naming the charge.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection

from storage import tables as t
from storage.models import Purchase
from storage.quota import record_entry
from storage.states import LedgerKind

_p, _u = t.purchases.c, t.users.c

PAID = "paid"
REFUNDING = "refunding"  # credits taken back; the platform is being asked to return the money
REFUNDED = "refunded"


@dataclass(frozen=True)
class NewPurchase:
    platform: str  # "telegram" or "discord"
    charge_id: str  # telegram_payment_charge_id, or the Discord entitlement id
    user_id: int
    credits: int
    price: int
    currency: str  # "XTR" for Stars; "SKU" for a Discord entitlement
    product: str  # the pack's invoice payload or the SKU id
    provider_charge_id: str = ""


@dataclass(frozen=True)
class Credited:
    purchase: Purchase
    new: bool  # False: this charge was credited before (a repeated update); nothing changed now
    balance: int  # the user's credits after it


def source(platform: str) -> str:
    """The ledger's actor for a platform's sales."""
    return f"{platform}-sale"


def credit(*, session: Connection, purchase: NewPurchase, now: float) -> Credited:
    """Record the charge and add its credits, once: a charge seen before changes nothing."""
    inserted = session.execute(
        t.upsert_insert(session, t.purchases)
        .values(
            platform=purchase.platform,
            charge_id=purchase.charge_id,
            user_id=purchase.user_id,
            credits=purchase.credits,
            price=purchase.price,
            currency=purchase.currency,
            product=purchase.product,
            provider_charge_id=purchase.provider_charge_id,
            state=PAID,
            credits_removed=0,
            at=now,
        )
        .on_conflict_do_nothing(index_elements=["platform", "charge_id"])
    )
    row = find(session=session, platform=purchase.platform, charge_id=purchase.charge_id)
    assert row is not None
    if inserted.rowcount != 1:
        balance = session.execute(select(_u.credits).where(_u.id == row.user_id)).scalar_one()
        return Credited(row, False, int(balance))
    balance = session.execute(
        update(t.users)
        .where(_u.id == purchase.user_id)
        .values(credits=_u.credits + purchase.credits)
        .returning(_u.credits)
    ).scalar_one()
    record_entry(
        session,
        purchase.user_id,
        None,
        LedgerKind.PURCHASE,
        purchase.credits,
        now,
        actor=source(purchase.platform),
        note=f"charge {purchase.charge_id}"[:256],
    )
    return Credited(row, True, int(balance))


def find(*, session: Connection, platform: str, charge_id: str) -> Purchase | None:
    row = session.execute(select(t.purchases).where(_p.platform == platform, _p.charge_id == charge_id)).first()
    return None if row is None else Purchase.model_validate(dict(row._mapping))


def find_charge(*, session: Connection, charge_id: str) -> Purchase | None:
    """A purchase by its charge id on whichever platform it was made."""
    row = session.execute(select(t.purchases).where(_p.charge_id == charge_id).order_by(_p.id).limit(1)).first()
    return None if row is None else Purchase.model_validate(dict(row._mapping))


class RefundStep(StrEnum):
    STARTED = "started"  # credits taken back: now ask the platform
    RETRY = "retry"  # an earlier refund took the credits but did not finish with the platform: ask again
    ALREADY = "already"  # refunded before
    SPENT = "spent"  # the user spent some of these credits: refused unless forced
    UNKNOWN = "unknown"  # no such charge


@dataclass(frozen=True)
class RefundStart:
    step: RefundStep
    purchase: Purchase | None = None
    removed: int = 0  # credits taken back now
    available: int = 0  # the user's free credits (with SPENT)


def start_refund(*, session: Connection, charge_id: str, force: bool, actor: str, now: float) -> RefundStart:
    """Take a purchase's credits back before its money is returned; the caller then asks the platform and
    calls ``finish_refund`` (or ``undo_refund`` when the platform refuses).

    Credits held for jobs in progress are not free. When fewer than the purchase's credits are free the
    refund is refused, unless ``force``: then the free ones are taken and the rest stays with the user."""
    row = session.execute(
        select(t.purchases).where(_p.charge_id == charge_id).order_by(_p.id).limit(1).with_for_update()
    ).first()
    if row is None:
        return RefundStart(RefundStep.UNKNOWN)
    purchase = Purchase.model_validate(dict(row._mapping))
    if purchase.state == REFUNDED:
        return RefundStart(RefundStep.ALREADY, purchase)
    if purchase.state == REFUNDING:
        return RefundStart(RefundStep.RETRY, purchase, purchase.credits_removed)
    user = session.execute(select(_u.credits, _u.reserved).where(_u.id == purchase.user_id).with_for_update()).one()
    free = max(0, int(user.credits) - int(user.reserved))
    if free < purchase.credits and not force:
        return RefundStart(RefundStep.SPENT, purchase, available=free)
    removed = min(purchase.credits, free)
    session.execute(update(t.users).where(_u.id == purchase.user_id).values(credits=_u.credits - removed))
    session.execute(update(t.purchases).where(_p.id == purchase.id).values(state=REFUNDING, credits_removed=removed))
    record_entry(
        session,
        purchase.user_id,
        None,
        LedgerKind.PURCHASE_REFUND,
        -removed,
        now,
        actor=actor,
        note=f"refund {purchase.charge_id}"[:256],
    )
    return RefundStart(RefundStep.STARTED, purchase, removed)


def finish_refund(*, session: Connection, purchase_id: int, now: float) -> None:
    """The platform returned the money."""
    session.execute(
        update(t.purchases).where(_p.id == purchase_id, _p.state == REFUNDING).values(state=REFUNDED, refunded_at=now)
    )


def undo_refund(*, session: Connection, purchase_id: int, actor: str, now: float) -> None:
    """The platform refused the refund: the credits taken back are given back, the purchase stands."""
    row = session.execute(
        select(t.purchases).where(_p.id == purchase_id, _p.state == REFUNDING).with_for_update()
    ).first()
    if row is None:
        return
    session.execute(update(t.users).where(_u.id == row.user_id).values(credits=_u.credits + row.credits_removed))
    session.execute(update(t.purchases).where(_p.id == purchase_id).values(state=PAID, credits_removed=0))
    record_entry(
        session,
        row.user_id,
        None,
        LedgerKind.PURCHASE_REFUND,
        int(row.credits_removed),
        now,
        actor=actor,
        note=f"refund of {row.charge_id} refused by the platform"[:256],
    )


def recent(*, session: Connection, user_id: int, limit: int = 5) -> list[Purchase]:
    """The user's latest purchases, newest first."""
    rows = session.execute(
        select(t.purchases).where(_p.user_id == user_id).order_by(_p.at.desc(), _p.id.desc()).limit(limit)
    )
    return [Purchase.model_validate(dict(row._mapping)) for row in rows]


def sold_between(*, session: Connection, start: float, end: float) -> dict[str, tuple[int, int]]:
    """Per platform: (credits sold, credits taken back by refunds) for purchases made in [start, end)."""
    rows = session.execute(
        select(_p.platform, func.sum(_p.credits), func.sum(_p.credits_removed))
        .where(_p.at >= start, _p.at < end)
        .group_by(_p.platform)
    )
    return {str(platform): (int(sold or 0), int(removed or 0)) for platform, sold, removed in rows}
