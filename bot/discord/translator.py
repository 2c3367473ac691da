"""The users' slash commands in their languages: names and descriptions from the catalogs the replies use.

Discord shows each user the localization for their client's language; admin commands stay English."""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands
from discord.app_commands import TranslationContextLocation as Where

from bot import i18n, messages

NAMES = (Where.command_name, Where.group_name, Where.parameter_name)
ADMIN = "admin"


class CatalogTranslator(app_commands.Translator):
    async def translate(
        self, string: app_commands.locale_str, locale: discord.Locale, context: app_commands.TranslationContextTypes
    ) -> str | None:
        language = i18n.match(locale.value)
        if language is None or language == i18n.SOURCE or _administrative(context.data):
            return None
        catalog = i18n.translations(language)
        source = string.message
        named = context.location in NAMES
        text = catalog.pgettext(messages.DISCORD_NAME, source) if named else catalog.gettext(source)
        return None if text == source else text


def _administrative(data: Any) -> bool:
    """Whether a command, group or option belongs to /admin (kept in English, like every admin text)."""
    command = getattr(data, "command", data)  # an option's command
    root = getattr(command, "root_parent", None) or command
    return getattr(root, "name", None) == ADMIN
