"""The quota ledger: reserving a job's cost, committing or refunding it, grants, and the daily job limit.

A user's row holds the running totals (credits, reserved, jobs today); the ``ledger`` table records each
movement, once per job and kind, so the reconciler can check one against the other.
"""

from __future__ import annotations

import datetime as dt
from typing import cast

from sqlalchemy import and_, bindparam, case, func, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from storage import fair_queue
from storage import tables as t
from storage.errors import QuotaRefused, RefusalReason
from storage.scopes import GLOBAL_SCOPE
from storage.states import LedgerKind

_u = t.users.c
_LEDGER_INSERT = t.ledger.insert()


def utc_day(now: float) -> str:
    """The UTC date a daily job count belongs to."""
    return dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%d")


def record_entry(
    session: Connection,
    user_id: int,
    job_id: str | None,
    kind: LedgerKind,
    amount: int,
    now: float,
    *,
    actor: str = "",
    note: str = "",
) -> None:
    """Append to the credit ledger; (job_id, kind) is unique, so a job moves quota once per kind."""
    session.execute(
        _LEDGER_INSERT,
        {
            "user_id": user_id,
            "job_id": job_id,
            "kind": kind,
            "amount": amount,
            "at": now,
            "actor": actor,
            "note": note,
        },
    )


# The hot-path statements are built once: building and cache-keying a statement costs more than
# SQLite takes to run it.
_GLOBAL_DAILY = select(t.scope_settings.c.daily_jobs).where(t.scope_settings.c.scope == GLOBAL_SCOPE).scalar_subquery()
# One statement checks the quota, takes the reservation and counts the job against today's limit; the
# same row carries the user's fair-queue finish tag, so the job's tag is handed out in that statement too.
_RESERVE = (
    update(t.users)
    .where(
        _u.id == bindparam("uid"),
        _u.banned.is_(False),
        or_(_u.unlimited.is_(True), _u.credits - _u.reserved >= bindparam("cost")),
        # Jobs counted today (none yet on a new day) under the limit in force, so a limit of 0 allows none.
        or_(
            _u.unlimited.is_(True),
            case((_u.day == bindparam("today"), _u.day_jobs), else_=0)
            < func.coalesce(_u.daily_jobs_limit, _GLOBAL_DAILY, bindparam("daily_default")),
        ),
    )
    .values(
        reserved=_u.reserved + bindparam("cost"),
        day_jobs=case((_u.day == bindparam("today"), _u.day_jobs + 1), else_=1),
        day=bindparam("today"),
        last_vfinish=fair_queue.NEXT_FINISH,
    )
    .returning(_u.last_vfinish, fair_queue.STEP.label("step"))
)
# Success charges the reservation; the job stops running, so its owner's running slot is freed here too.
_COMMIT = (
    update(t.users)
    .where(_u.id == bindparam("uid"))
    .values(
        reserved=_u.reserved - bindparam("amount"),
        credits=case((_u.unlimited, _u.credits), else_=_u.credits - bindparam("amount")),
        running=_u.running - 1,
    )
)
# A refunded job gives back its daily slot too, if it is still the same UTC day, and its running slot
# if it was running.
_REFUND = (
    update(t.users)
    .where(_u.id == bindparam("uid"))
    .values(
        reserved=_u.reserved - bindparam("amount"),
        day_jobs=case((and_(_u.day == bindparam("job_day"), _u.day_jobs > 0), _u.day_jobs - 1), else_=_u.day_jobs),
        running=_u.running - bindparam("was_running"),
    )
)


def reserve(*, session: Connection, user_id: int, cost: int, now: float, daily_jobs_default: int) -> float | None:
    """Reserve a job's cost if the user may submit it: not banned, enough credits, under the daily limit.

    Returns the job's fair-queue start tag, or None when refused (nothing changed; ``refusal`` says why).
    The caller records the reserve entry once the job row exists, so a repeated job fails as a duplicate
    rather than on the ledger's unique key.
    """
    row = session.execute(
        _RESERVE, {"uid": user_id, "cost": cost, "today": utc_day(now), "daily_default": daily_jobs_default}
    ).first()
    return None if row is None else float(row.last_vfinish - row.step)


def refusal(*, session: Connection, user_id: int, cost: int, daily_jobs_default: int) -> QuotaRefused:
    """Why ``reserve`` refused this user a job of this cost."""
    row = session.execute(select(t.users).where(_u.id == user_id)).first()
    if row is None:
        return QuotaRefused(RefusalReason.UNKNOWN_USER)
    if row.banned:
        return QuotaRefused(RefusalReason.BANNED)
    if not row.unlimited and row.credits - row.reserved < cost:
        return QuotaRefused(RefusalReason.NO_CREDITS, needed=cost, available=row.credits - row.reserved)
    return QuotaRefused(
        RefusalReason.DAILY_LIMIT,
        limit=daily_limit(session=session, user_id=user_id, daily_jobs_default=daily_jobs_default),
    )


def daily_limit(*, session: Connection, user_id: int, daily_jobs_default: int) -> int:
    """The daily job limit in force for the user: their own, else the global one, else the configured
    default. Zero is a limit like any other (no jobs), not a missing one."""
    row = session.execute(
        select(func.coalesce(_u.daily_jobs_limit, _GLOBAL_DAILY, bindparam("daily_default"))).where(_u.id == user_id),
        {"daily_default": daily_jobs_default},
    ).first()
    return int(daily_jobs_default if row is None else row[0])


# The same conditions as the reservation itself, so the read-ahead and the submit cannot disagree.
_MAY_RESERVE = select(_u.id).where(cast("ColumnElement[bool]", _RESERVE.whereclause))


def check(*, session: Connection, user_id: int, cost: int, now: float, daily_jobs_default: int) -> QuotaRefused | None:
    """Why ``reserve`` would refuse this user a job of this cost now, or None; reads only, so a request can
    be refused before any costly work (decoding, storing photos) is done for it."""
    params = {"uid": user_id, "cost": cost, "today": utc_day(now), "daily_default": daily_jobs_default}
    if session.execute(_MAY_RESERVE, params).first() is not None:
        return None
    return refusal(session=session, user_id=user_id, cost=cost, daily_jobs_default=daily_jobs_default)


def commit(*, session: Connection, user_id: int, job_id: str, cost: int, now: float) -> None:
    """Charge a succeeded job's reservation (unlimited users keep their credits)."""
    session.execute(_COMMIT, {"uid": user_id, "amount": cost})
    record_entry(session, user_id, job_id, LedgerKind.COMMIT, cost, now)


def refund(
    *, session: Connection, user_id: int, job_id: str, cost: int, created_at: float, now: float, was_running: bool
) -> None:
    """Give back a failed or cancelled job's reservation, and its place in the day's job count."""
    session.execute(
        _REFUND, {"uid": user_id, "amount": cost, "job_day": utc_day(created_at), "was_running": int(was_running)}
    )
    record_entry(session, user_id, job_id, LedgerKind.REFUND, cost, now)


class TakeAwayRefused(Exception):
    """Taking away more credits than the user has free (credits held for their jobs in progress are not
    free: charging those would push the balance below zero). Nothing was written."""

    def __init__(self, available: int) -> None:
        super().__init__(available)
        self.available = available


def grant(*, session: Connection, user_id: int, amount: int, actor: str, now: float, note: str = "") -> tuple[int, int]:
    """Add credits; a negative amount takes them away. Returns (change made, new balance).

    Raises TakeAwayRefused when the take-away is more than the free balance (credits minus those held).
    """
    change = update(t.users).where(_u.id == user_id).values(credits=_u.credits + amount).returning(_u.credits)
    if amount < 0:
        # Checked in the update itself, so a job reserved meanwhile cannot be overdrawn.
        change = change.where(_u.credits - _u.reserved >= -amount)
    row = session.execute(change).first()
    if row is None:
        free = session.execute(select(_u.credits - _u.reserved).where(_u.id == user_id)).scalar_one()
        raise TakeAwayRefused(max(0, int(free)))
    kind = LedgerKind.GRANT if amount >= 0 else LedgerKind.ADJUST
    record_entry(session, user_id, None, kind, amount, now, actor=actor, note=note)
    return amount, int(row.credits)
