"""The language a user reads: shown and chosen with /language, else their platform's, else the default."""

from __future__ import annotations

from bot import i18n, messages
from bot.errors import UserError
from bot.service.actors import Actor
from bot.service.replies import Action, Button, Reply
from bot.service.users import Users

AUTO = "auto"  # the choice that follows the platform's language again


class Languages:
    def __init__(self, users: Users) -> None:
        self.users = users

    async def show(self, actor: Actor) -> Reply:
        """The language in use, where it comes from, and a button for each one."""
        user = await self.users.of(actor)
        current = await self.users.language(actor)
        i18n.use(current)
        return Reply(messages.language_now(i18n.LANGUAGES[current], chosen=user.language is not None), _buttons())

    async def choose(self, actor: Actor, choice: str) -> Reply:
        """Keep the user's choice ("auto": their platform's language again) and answer in it at once."""
        choice = choice.strip()
        if choice.lower() == AUTO:
            code = None
        else:
            code = i18n.match(choice)
            if code is None:
                raise UserError(messages.unknown_language(choice[:40], ", ".join(i18n.LANGUAGES)))
        await self.users.choose_language(actor, code)
        current = await self.users.language(actor)
        i18n.use(current)
        if code is None:
            return Reply(messages.language_follows_platform(i18n.LANGUAGES[current]))
        return Reply(messages.language_chosen(i18n.LANGUAGES[current]))


def _buttons() -> tuple[Button, ...]:
    names = [
        Button(name, Action.LANGUAGE, code, row=index // 3) for index, (code, name) in enumerate(i18n.LANGUAGES.items())
    ]
    return (*names, Button(messages.LANGUAGE_AUTO, Action.LANGUAGE, AUTO, row=2))
