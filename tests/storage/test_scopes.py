"""Scope settings come back as typed values; an update changes only the settings it names."""

from __future__ import annotations

from storage import scopes
from storage.db import Database


async def test_unset_scope_has_the_defaults(db: Database) -> None:
    assert await db.read(scopes.get_scope, scope="telegram:chat:5") == scopes.Scope("telegram:chat:5")


async def test_update_changes_only_the_named_settings(db: Database) -> None:
    await db.write(scopes.update_scope, scope=scopes.GLOBAL_SCOPE, now=10.0, daily_jobs=4)
    await db.write(scopes.update_scope, scope=scopes.GLOBAL_SCOPE, now=11.0, paused=True, pause_reason="upgrade")
    await db.write(scopes.update_scope, scope=scopes.GLOBAL_SCOPE, now=12.0, channels=["1", "2"])
    assert await db.read(scopes.get_scope, scope=scopes.GLOBAL_SCOPE) == scopes.Scope(
        name=scopes.GLOBAL_SCOPE,
        paused=True,
        pause_reason="upgrade",
        daily_jobs=4,
        channels=("1", "2"),
        updated_at=12.0,
    )
    await db.write(scopes.update_scope, scope=scopes.GLOBAL_SCOPE, now=13.0, paused=False, channels=[])
    found = await db.read(scopes.get_scope, scope=scopes.GLOBAL_SCOPE)
    assert not found.paused and found.channels == () and found.daily_jobs == 4 and found.pause_reason == "upgrade"
