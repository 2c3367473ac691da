"""Users and their quota: credits, daily job limits, bans, grants, and the reconciler."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection

from storage import tables as t
from storage.models import User
from storage.states import UNFINISHED_STATES, JobState, LedgerKind, Tier

GLOBAL_SCOPE = "global"
_LEDGER_INSERT = t.ledger.insert()


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


def find_user(*, session: Connection, platform: str, platform_user_id: str) -> User | None:
    u = t.users.c
    row = (
        session.execute(select(t.users).where(u.platform == platform, u.platform_user_id == platform_user_id))
    ).first()
    return None if row is None else User.model_validate(dict(row._mapping))


def ensure_user(
    *,
    session: Connection,
    platform: str,
    platform_user_id: str,
    now: float,
    welcome_credits: int,
    display_name: str = "",
    tier: Tier = Tier.FREE,
    unlimited: bool = False,
) -> User:
    """The user, created with the welcome credits (recorded as a grant) on first sight."""
    created = session.execute(
        t.upsert_insert(session, t.users)
        .values(
            platform=platform,
            platform_user_id=platform_user_id,
            display_name=display_name[:128],
            tier=tier,
            banned=False,
            ban_reason="",
            unlimited=unlimited,
            credits=welcome_credits,
            reserved=0,
            running=0,
            day="",
            day_jobs=0,
            last_vfinish=0.0,
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=["platform", "platform_user_id"])
    )
    user = find_user(session=session, platform=platform, platform_user_id=platform_user_id)
    assert user is not None
    if created.rowcount == 1 and welcome_credits:
        record_entry(session, user.id or 0, None, LedgerKind.GRANT, welcome_credits, now, note="welcome")
    return user


def grant(*, session: Connection, user_id: int, amount: int, actor: str, now: float, note: str = "") -> tuple[int, int]:
    """Add credits (negative takes them away, never below zero). Returns (change made, new balance)."""
    u = t.users.c
    current = (session.execute(select(u.credits).where(u.id == user_id))).scalar_one()
    delta = max(amount, -int(current))
    row = (
        session.execute(update(t.users).where(u.id == user_id).values(credits=u.credits + delta).returning(u.credits))
    ).one()
    kind = LedgerKind.GRANT if delta >= 0 else LedgerKind.ADJUST
    record_entry(session, user_id, None, kind, delta, now, actor=actor, note=note)
    return delta, int(row.credits)


def get_user(*, session: Connection, user_id: int) -> User | None:
    row = (session.execute(select(t.users).where(t.users.c.id == user_id))).first()
    return None if row is None else User.model_validate(dict(row._mapping))


def set_user_fields(*, session: Connection, user_id: int, **values: Any) -> None:
    session.execute(update(t.users).where(t.users.c.id == user_id).values(**values))


def get_scope(*, session: Connection, scope: str) -> dict[str, Any] | None:
    row = (session.execute(select(t.scope_settings).where(t.scope_settings.c.scope == scope))).first()
    return None if row is None else dict(row._mapping)


def update_scope(*, session: Connection, scope: str, now: float, **values: Any) -> None:
    """Create or change the operator settings of one scope (global, a chat or a guild)."""
    defaults: dict[str, Any] = {"paused": False, "pause_reason": "", "channels": [], "extra": {}}
    statement = t.upsert_insert(session, t.scope_settings).values(scope=scope, updated_at=now, **{**defaults, **values})
    session.execute(statement.on_conflict_do_update(index_elements=["scope"], set_={"updated_at": now, **values}))


def audit(
    *,
    session: Connection,
    actor: str,
    action: str,
    target: str,
    now: float,
    detail: dict[str, Any] | None = None,
) -> None:
    session.execute(t.audit_log.insert().values(at=now, actor=actor, action=action, target=target, detail=detail or {}))


@dataclass(frozen=True)
class Drift:
    """A broken quota invariant, for the operator."""

    kind: str
    user_id: int | None
    job_id: str | None
    expected: int
    found: int


def reconcile(*, session: Connection) -> list[Drift]:
    """Check the quota invariants; an empty list means the books balance.

    - a user's ``reserved`` equals the cost of their unfinished jobs, ``running`` their running jobs;
    - every job has one reserve, and once finished exactly one commit or refund (none before);
    - a user's ``credits`` equal their grants and adjustments minus their commits.
    """
    drift: list[Drift] = []
    j, u, led = t.jobs.c, t.users.c, t.ledger.c
    in_flight = (
        select(j.user_id, func.sum(j.cost).label("cost"))
        .where(j.state.in_([s.value for s in UNFINISHED_STATES]))
        .group_by(j.user_id)
        .subquery()
    )
    running = (
        select(j.user_id, func.count().label("jobs")).where(j.state == JobState.RUNNING).group_by(j.user_id).subquery()
    )
    rows = session.execute(
        select(
            u.id,
            u.reserved,
            u.running,
            func.coalesce(in_flight.c.cost, 0).label("cost"),
            func.coalesce(running.c.jobs, 0).label("running_jobs"),
        )
        .outerjoin(in_flight, in_flight.c.user_id == u.id)
        .outerjoin(running, running.c.user_id == u.id)
    )
    for row in rows:
        if int(row.reserved) != int(row.cost):
            drift.append(Drift("reserved", row.id, None, int(row.cost), int(row.reserved)))
        if int(row.running) != int(row.running_jobs):
            drift.append(Drift("running", row.id, None, int(row.running_jobs), int(row.running)))

    settled = (
        select(led.job_id, func.count().label("n"))
        .where(led.kind.in_([LedgerKind.COMMIT, LedgerKind.REFUND]))
        .group_by(led.job_id)
        .subquery()
    )
    reserves = (
        select(led.job_id, func.count().label("n"))
        .where(led.kind == LedgerKind.RESERVE)
        .group_by(led.job_id)
        .subquery()
    )
    rows = session.execute(
        select(
            j.id,
            j.user_id,
            j.state,
            func.coalesce(settled.c.n, 0).label("settled"),
            func.coalesce(reserves.c.n, 0).label("reserves"),
        )
        .outerjoin(settled, settled.c.job_id == j.id)
        .outerjoin(reserves, reserves.c.job_id == j.id)
    )
    unfinished = {s.value for s in UNFINISHED_STATES}
    for row in rows:
        if int(row.reserves) != 1:
            drift.append(Drift("reserve_entries", row.user_id, row.id, 1, int(row.reserves)))
        expected = 0 if row.state in unfinished else 1
        if int(row.settled) != expected:
            drift.append(Drift("settle_entries", row.user_id, row.id, expected, int(row.settled)))

    movements = (
        select(
            led.user_id,
            func.sum(led.amount).filter(led.kind.in_([LedgerKind.GRANT, LedgerKind.ADJUST])).label("granted"),
            func.sum(led.amount).filter(led.kind == LedgerKind.COMMIT).label("spent"),
        )
        .group_by(led.user_id)
        .subquery()
    )
    rows = session.execute(
        select(
            u.id,
            u.credits,
            u.unlimited,
            func.coalesce(movements.c.granted, 0).label("granted"),
            func.coalesce(movements.c.spent, 0).label("spent"),
        ).outerjoin(movements, movements.c.user_id == u.id)
    )
    for row in rows:
        if row.unlimited:
            continue
        expected = int(row.granted) - int(row.spent)
        if int(row.credits) != expected:
            drift.append(Drift("credits", row.id, None, expected, int(row.credits)))
    return drift
