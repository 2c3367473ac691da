"""`likeness discord sync`: register the slash commands with Discord over REST, without a gateway."""

from __future__ import annotations

import logging

import discord
from discord import app_commands

from bot.discord.commands import add_commands
from bot.discord.endpoints import configured_endpoints
from bot.discord.frontend import DiscordStartError
from bot.discord.translator import CatalogTranslator
from bot.settings import DiscordSettings

log = logging.getLogger(__name__)


async def sync_commands(settings: DiscordSettings, guild_id: int | None) -> int:
    """Overwrite the application's global commands (or one guild's, which update at once); returns how
    many commands Discord now has there. Raises ValueError without a token, DiscordStartError when
    Discord rejects it, discord.HTTPException for anything else Discord refuses."""
    if settings.token is None:
        raise ValueError("LIKENESS_DISCORD__TOKEN is not set")
    client = discord.Client(intents=discord.Intents(guilds=True))
    tree: app_commands.CommandTree[discord.Client] = app_commands.CommandTree(client)
    add_commands(tree)
    await tree.set_translator(CatalogTranslator())
    guild = discord.Object(guild_id) if guild_id is not None else None
    with configured_endpoints(settings.api_base, settings.gateway_url):
        try:
            try:
                await client.login(settings.token.get_secret_value())
            except discord.LoginFailure:
                raise DiscordStartError("Discord rejected the bot token (LIKENESS_DISCORD__TOKEN)") from None
            if guild is not None:
                tree.copy_global_to(guild=guild)
            synced = await tree.sync(guild=guild)
        finally:
            await client.close()
    log.info("synced %d commands %s", len(synced), f"to guild {guild_id}" if guild is not None else "globally")
    return len(synced)
