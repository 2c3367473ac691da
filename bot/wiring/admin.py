"""`likeness admin`: the admin use cases over the store, for the operator's shell."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from bot.service.admin import AdminService
from bot.settings import Settings
from bot.wiring.store import open_database


@contextlib.asynccontextmanager
async def open_admin(settings: Settings) -> AsyncIterator[AdminService]:
    """The admin service on the migrated database, closed when the block ends."""
    db = await open_database(settings)
    try:
        yield AdminService(
            db,
            admins=settings.admins,
            admin_role=settings.discord.admin_role,
            welcome_credits=settings.credits.new_user,
            worker_ttl_s=3 * settings.queue.heartbeat_s,
            safety=settings.safety,
        )
    finally:
        await db.dispose()
