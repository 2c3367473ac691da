"""The discord.py client: the command tree, persistent buttons, and a way back to the front end."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands

if TYPE_CHECKING:
    from bot.discord.frontend import DiscordFrontEnd


class LikenessClient(discord.Client):
    def __init__(
        self,
        frontend: DiscordFrontEnd,
        *,
        dynamic_items: Sequence[type[discord.ui.DynamicItem[Any]]],
        guild_ready_timeout: float,
    ) -> None:
        # Slash commands and buttons need no privileged intent; guilds keeps channels and roles cached.
        super().__init__(intents=discord.Intents(guilds=True), guild_ready_timeout=guild_ready_timeout)
        self.frontend = frontend
        self.tree: app_commands.CommandTree[LikenessClient] = LikenessTree(self)
        self._dynamic_items = tuple(dynamic_items)

    async def setup_hook(self) -> None:
        self.add_dynamic_items(*self._dynamic_items)

    async def on_entitlement_create(self, entitlement: discord.Entitlement) -> None:
        """Discord created an entitlement: a purchase in its store, credited at once."""
        await self.frontend.entitled(entitlement)


class LikenessTree(app_commands.CommandTree["LikenessClient"]):
    async def interaction_check(self, interaction: discord.Interaction[LikenessClient], /) -> bool:
        """Before every command: it is answered in its user's language (their choice, else their client's)."""
        await self.client.frontend.use_language(interaction)
        return True


def frontend_of(interaction: discord.Interaction[Any]) -> DiscordFrontEnd:
    client = interaction.client
    assert isinstance(client, LikenessClient)
    return client.frontend
