"""Chat users: found by their platform id, created on first sight with the welcome credits."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from storage import tables as t
from storage.models import User
from storage.quota import record_entry
from storage.states import LedgerKind, Tier

_u = t.users.c


def find_user(*, session: Connection, platform: str, platform_user_id: str) -> User | None:
    row = session.execute(
        select(t.users).where(_u.platform == platform, _u.platform_user_id == platform_user_id)
    ).first()
    return None if row is None else User.model_validate(dict(row._mapping))


def get_user(*, session: Connection, user_id: int) -> User | None:
    row = session.execute(select(t.users).where(_u.id == user_id)).first()
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


def set_user_fields(*, session: Connection, user_id: int, **values: Any) -> None:
    """Change operator-set fields of a user (ban, daily limit, running cap, tier)."""
    session.execute(update(t.users).where(_u.id == user_id).values(**values))


def accept_privacy(*, session: Connection, user_id: int, now: float) -> float:
    """Record that the user agreed to the privacy notice (the first time only); returns when they did."""
    session.execute(
        update(t.users).where(_u.id == user_id, _u.privacy_accepted_at.is_(None)).values(privacy_accepted_at=now)
    )
    accepted = session.execute(select(_u.privacy_accepted_at).where(_u.id == user_id)).scalar_one()
    return float(accepted)
