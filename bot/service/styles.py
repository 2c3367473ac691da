"""Style presets for chat users: /styles lists them, --style NAME (Discord: the style option) applies one."""

from __future__ import annotations

from bot import i18n, messages
from bot.errors import UserError
from bot.service.replies import Reply
from bot.styles import Style


class Styles:
    def __init__(self, presets: dict[str, Style]) -> None:
        self.presets = presets

    def listing(self) -> Reply:
        """Every preset with its one-line description, in the reader's language where it has one."""
        return Reply(messages.styles_list([(s.name, self.description(s)) for s in self.presets.values()]))

    @staticmethod
    def description(style: Style) -> str:
        return style.descriptions.get(i18n.current()) or messages.style_description(style.description)

    def names(self, typed: str = "") -> list[str]:
        """The presets whose name starts with what was typed (for Discord's autocomplete)."""
        typed = typed.strip().lower()
        return [name for name in self.presets if name.startswith(typed)]

    def find(self, name: str) -> Style:
        style = self.presets.get(name.strip().lower())
        if style is None:
            raise UserError(messages.unknown_style(name[:40], ", ".join(self.presets)))
        return style
