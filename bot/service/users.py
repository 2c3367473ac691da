"""Chat users as the use cases see them: created on first contact, and let in only where the bot is open."""

from __future__ import annotations

import time
from collections.abc import Callable

from bot import messages
from bot.errors import UserError
from bot.service.actors import Actor
from storage import scopes, users
from storage.db import Database
from storage.models import User


class Users:
    def __init__(self, db: Database, *, welcome_credits: int, clock: Callable[[], float] = time.time) -> None:
        self.db, self.welcome_credits, self.clock = db, welcome_credits, clock

    async def of(self, actor: Actor) -> User:
        """The actor's user row, created with the welcome credits the first time they appear."""
        return await self.db.write(
            users.ensure_user,
            platform=actor.platform,
            platform_user_id=actor.user_id,
            now=self.clock(),
            welcome_credits=self.welcome_credits,
            display_name=actor.display_name,
        )

    async def check_open(self, actor: Actor) -> None:
        """Refuse when an admin paused the bot here, or this channel is not one the guild allows."""
        for name in dict.fromkeys((scopes.GLOBAL_SCOPE, actor.scope)):
            scope = await self.db.read(scopes.get_scope, scope=name)
            if scope.paused:
                raise UserError(messages.paused_for_users(scope.pause_reason))
            if scope.channels and actor.chat_id not in scope.channels:
                raise UserError(messages.NOT_THIS_CHANNEL)
