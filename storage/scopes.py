"""Operator settings per scope (everywhere, a chat, a guild): pause, daily job limit, allowed channels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from storage import tables as t

GLOBAL_SCOPE = "global"


@dataclass(frozen=True)
class Scope:
    """The settings of one scope: "global", "telegram:chat:<id>" or "discord:guild:<id>"."""

    name: str
    paused: bool = False
    pause_reason: str = ""
    daily_jobs: int | None = None  # None: the next scope's limit, or the configured default
    channels: tuple[str, ...] = ()  # empty: every channel
    safety_policy: str | None = None  # None: the global scope's, or the configured default
    updated_at: float = 0.0


def get_scope(*, session: Connection, scope: str) -> Scope:
    """The scope's settings; the defaults (nothing paused, no limit, every channel) if none were set."""
    row = session.execute(select(t.scope_settings).where(t.scope_settings.c.scope == scope)).first()
    if row is None:
        return Scope(scope)
    return Scope(
        name=row.scope,
        paused=bool(row.paused),
        pause_reason=row.pause_reason,
        daily_jobs=row.daily_jobs,
        channels=tuple(str(channel) for channel in row.channels),
        safety_policy=row.safety_policy,
        updated_at=row.updated_at,
    )


def update_scope(
    *,
    session: Connection,
    scope: str,
    now: float,
    paused: bool | None = None,
    pause_reason: str | None = None,
    daily_jobs: int | None = None,
    channels: Sequence[str] | None = None,
    safety_policy: str | None = None,
) -> None:
    """Create or change the settings of one scope; a setting left as None keeps its value (an empty
    ``safety_policy`` removes the scope's own policy)."""
    given: dict[str, Any] = {
        "paused": paused,
        "pause_reason": pause_reason,
        "daily_jobs": daily_jobs,
        "channels": None if channels is None else list(channels),
    }
    values = {key: value for key, value in given.items() if value is not None}
    if safety_policy is not None:
        values["safety_policy"] = safety_policy or None
    defaults: dict[str, Any] = {"paused": False, "pause_reason": "", "channels": []}
    statement = t.upsert_insert(session, t.scope_settings).values(scope=scope, updated_at=now, **{**defaults, **values})
    session.execute(statement.on_conflict_do_update(index_elements=["scope"], set_={"updated_at": now, **values}))
