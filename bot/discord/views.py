"""Restart-proof buttons: the whole state is the custom_id, so a click works in any later process."""

from __future__ import annotations

import re
from typing import Any

import discord

from bot.discord.client import frontend_of
from bot.service.replies import Action, Button

ACTIONS = "|".join(re.escape(str(action)) for action in Action)
STYLES = {
    Action.REROLL: discord.ButtonStyle.primary,
    Action.VARY: discord.ButtonStyle.secondary,
    Action.CANCEL: discord.ButtonStyle.danger,
    Action.HISTORY: discord.ButtonStyle.secondary,
    Action.FORGET: discord.ButtonStyle.danger,
    Action.CONFIRM: discord.ButtonStyle.success,
    Action.DECLINE: discord.ButtonStyle.secondary,
}


class ActionButton(
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]],
    template=rf"(?P<action>{ACTIONS}):(?P<argument>.{{0,96}})",
):
    """One service Button; its custom_id is ``Button.data`` ("rr:<job id>", "hi:<page>", "fg:yes")."""

    def __init__(self, button: Button) -> None:
        style = STYLES[button.action]
        if button.action is Action.FORGET and button.argument != "yes":
            style = discord.ButtonStyle.secondary
        super().__init__(discord.ui.Button(label=button.label, style=style, custom_id=button.data))
        self.action, self.argument = button.action, button.argument

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[discord.Client],
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> ActionButton:
        label = item.label if isinstance(item, discord.ui.Button) else None
        return cls(Button(label or "", Action(match["action"]), match["argument"]))

    async def callback(self, interaction: discord.Interaction[discord.Client]) -> None:
        await frontend_of(interaction).on_button(interaction, self.action, self.argument)


def view_for(buttons: tuple[Button, ...]) -> discord.ui.View | None:
    """A view holding the buttons (no timeout: dynamic items need no memory of the message)."""
    if not buttons:
        return None
    view = discord.ui.View(timeout=None)
    for button in buttons:
        view.add_item(ActionButton(button))
    return view
