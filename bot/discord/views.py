"""Restart-proof buttons: the whole state is the custom_id, so a click works in any later process."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any, cast

import discord

from bot.discord.client import frontend_of
from bot.service.replies import Action, Button, Menu

ACTIONS = "|".join(re.escape(str(action)) for action in Action)
STYLES = {
    Action.REROLL: discord.ButtonStyle.primary,
    Action.VARY: discord.ButtonStyle.secondary,
    Action.CANCEL: discord.ButtonStyle.danger,
    Action.HISTORY: discord.ButtonStyle.secondary,
    Action.FORGET: discord.ButtonStyle.danger,
    Action.CONFIRM: discord.ButtonStyle.success,
    Action.DECLINE: discord.ButtonStyle.secondary,
    Action.PRIVACY: discord.ButtonStyle.success,
    Action.RERUN: discord.ButtonStyle.primary,
}


class ActionButton(
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]],
    template=rf"(?P<action>{ACTIONS}):(?P<argument>.{{0,96}})",
):
    """One service Button; its custom_id is ``Button.data`` ("rr:<job id>", "hi:<page>", "fg:yes")."""

    def __init__(self, button: Button) -> None:
        style = STYLES.get(button.action, discord.ButtonStyle.secondary)
        if button.action is Action.FORGET and button.argument != "yes":
            style = discord.ButtonStyle.secondary
        super().__init__(discord.ui.Button(label=button.label, style=style, custom_id=button.data, row=button.row))
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


class MenuSelect(
    discord.ui.DynamicItem[discord.ui.Select[discord.ui.View]],
    template=rf"menu:(?P<action>{ACTIONS})",
):
    """A service Menu as a select menu; the chosen entry's value is the action's argument ("menu:op")."""

    def __init__(
        self, action: Action, options: list[discord.SelectOption] | None = None, placeholder: str = ""
    ) -> None:
        select: discord.ui.Select[discord.ui.View] = discord.ui.Select(
            custom_id=f"menu:{action}", options=options or [], placeholder=placeholder or None, row=0
        )
        super().__init__(select)
        self.action = action

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[discord.Client],
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> MenuSelect:
        return cls(Action(match["action"]))

    async def callback(self, interaction: discord.Interaction[discord.Client]) -> None:
        data = cast(dict[str, Any], interaction.data or {})
        values = data.get("values") or [""]
        await frontend_of(interaction).on_button(interaction, self.action, str(values[0])[:100])


def view_for(buttons: tuple[Button, ...], menu: Menu | None = None) -> discord.ui.View | None:
    """A view holding the menu (a select on the first row) and the buttons by row (no timeout: dynamic items
    need no memory of the message)."""
    if not buttons and (menu is None or not menu.entries):
        return None
    view = discord.ui.View(timeout=None)
    first = 0
    if menu is not None and menu.entries:
        options = [discord.SelectOption(label=entry.label[:100], value=entry.value) for entry in menu.entries[:25]]
        view.add_item(MenuSelect(menu.action, options, menu.placeholder[:150]))
        first = 1
    rows = sorted({button.row for button in buttons})
    for button in buttons:
        place = min(4, first + rows.index(button.row))
        view.add_item(ActionButton(replace(button, row=place)))
    return view
