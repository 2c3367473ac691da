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


def language_of(*, session: Connection, platform: str, platform_user_id: str) -> tuple[str | None, str | None] | None:
    """The user's chosen language and their platform's last reported one; None for a user never seen."""
    row = session.execute(
        select(_u.language, _u.locale).where(_u.platform == platform, _u.platform_user_id == platform_user_id)
    ).first()
    return None if row is None else (row.language, row.locale)


def job_user_language(*, session: Connection, job_id: str) -> tuple[str | None, str | None] | None:
    """The chosen and the reported language of the user a job belongs to; None if the job is gone."""
    row = session.execute(
        select(_u.language, _u.locale)
        .select_from(t.jobs.join(t.users, t.jobs.c.user_id == _u.id))
        .where(t.jobs.c.id == job_id)
    ).first()
    return None if row is None else (row.language, row.locale)


def set_language(*, session: Connection, user_id: int, language: str | None) -> None:
    """The language the user chose (None: go back to their platform's)."""
    session.execute(update(t.users).where(_u.id == user_id).values(language=language))


def note_locale(*, session: Connection, platform: str, platform_user_id: str, locale: str) -> None:
    """The language the user's platform reports now, kept for replies sent outside their requests."""
    session.execute(
        update(t.users)
        .where(_u.platform == platform, _u.platform_user_id == platform_user_id, _u.locale.is_distinct_from(locale))
        .values(locale=locale)
    )
