"""Chat users as the use cases see them: created on first contact, and let in only where the bot is open."""

from __future__ import annotations

import time
from collections.abc import Callable

from bot import i18n, messages
from bot.errors import UserError
from bot.service.actors import Actor
from storage import scopes, users
from storage.db import Database
from storage.models import User


class Users:
    def __init__(
        self,
        db: Database,
        *,
        welcome_credits: int,
        default_language: str = i18n.SOURCE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db, self.welcome_credits, self.clock = db, welcome_credits, clock
        self.default_language = default_language

    async def of(self, actor: Actor) -> User:
        """The actor's user row, created with the welcome credits the first time they appear."""
        user = await self.db.write(
            users.ensure_user,
            platform=actor.platform,
            platform_user_id=actor.user_id,
            now=self.clock(),
            welcome_credits=self.welcome_credits,
            display_name=actor.display_name,
        )
        locale = _locale(actor)
        if locale and user.locale != locale:  # kept for the replies sent later, outside this request
            await self.db.write(
                users.note_locale, platform=actor.platform, platform_user_id=actor.user_id, locale=locale
            )
        return user

    async def language(self, actor: Actor) -> str:
        """The language to answer this actor in: their choice, else their platform's, else the default."""
        found = await self.db.read(users.language_of, platform=actor.platform, platform_user_id=actor.user_id)
        chosen, reported = found if found is not None else (None, None)
        locale = _locale(actor)
        if found is not None and locale and locale != reported:
            await self.db.write(
                users.note_locale, platform=actor.platform, platform_user_id=actor.user_id, locale=locale
            )
        return i18n.resolve(chosen, locale or reported, self.default_language)

    async def choose_language(self, actor: Actor, language: str | None) -> None:
        """Keep the user's choice (None: follow their platform's language again)."""
        user = await self.of(actor)
        await self.db.write(users.set_language, user_id=user.id or 0, language=language)

    async def check_open(self, actor: Actor) -> None:
        """Refuse when an admin paused the bot here, or this channel is not one the guild allows."""
        for name in dict.fromkeys((scopes.GLOBAL_SCOPE, actor.scope)):
            scope = await self.db.read(scopes.get_scope, scope=name)
            if scope.paused:
                raise UserError(messages.paused_for_users(scope.pause_reason))
            if scope.channels and actor.chat_id not in scope.channels:
                raise UserError(messages.NOT_THIS_CHANNEL)


def _locale(actor: Actor) -> str | None:
    """The platform's language tag as kept (a column of 16 characters)."""
    return actor.locale[:16] if actor.locale else None
