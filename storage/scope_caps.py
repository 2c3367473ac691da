"""Per-scope daily image caps: how many images a Discord server's or Telegram group's members may render there
per UTC day, set by its admins, whatever credits the users have. Images are counted when their job is queued."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.engine import Connection

from storage import tables as t
from storage.quota import utc_day

_s, _d = t.scope_settings.c, t.scope_days.c


class ScopeCapReached(Exception):
    """The scope's images for today would pass its cap; nothing was counted."""

    def __init__(self, cap: int, used: int) -> None:
        super().__init__(cap)
        self.cap, self.used = cap, used


def set_cap(*, session: Connection, scope: str, images: int | None, now: float) -> None:
    """Set the scope's daily image cap (None: no cap)."""
    statement = t.upsert_insert(session, t.scope_settings).values(
        scope=scope, paused=False, pause_reason="", channels=[], daily_images=images, updated_at=now
    )
    session.execute(
        statement.on_conflict_do_update(index_elements=["scope"], set_={"daily_images": images, "updated_at": now})
    )


def cap_of(*, session: Connection, scope: str) -> int | None:
    cap = session.execute(select(_s.daily_images).where(_s.scope == scope)).scalar()
    return None if cap is None else int(cap)


def used_today(*, session: Connection, scope: str, now: float) -> int:
    used = session.execute(select(_d.images).where(_d.scope == scope, _d.day == utc_day(now))).scalar()
    return int(used or 0)


def take(*, session: Connection, scope: str, images: int, now: float) -> None:
    """Count ``images`` against the scope's cap for today, in the caller's transaction; raises ScopeCapReached
    (counting nothing) when they would pass it. A scope without a cap counts nothing."""
    cap = cap_of(session=session, scope=scope)
    if cap is None:
        return
    day = utc_day(now)
    if images > cap:
        raise ScopeCapReached(cap, used_today(session=session, scope=scope, now=now))
    # Conditional on the row as it is when written, so members submitting at once cannot pass the cap together.
    counted = session.execute(
        t.upsert_insert(session, t.scope_days)
        .values(scope=scope, day=day, images=images)
        .on_conflict_do_update(
            index_elements=["scope", "day"],
            set_={"images": _d.images + images},
            where=_d.images + images <= cap,
        )
    )
    if counted.rowcount != 1:
        raise ScopeCapReached(cap, used_today(session=session, scope=scope, now=now))
