"""Who is asking, and where: the neutral form of a chat event's sender."""

from __future__ import annotations

from dataclasses import dataclass

SHELL = "shell"


@dataclass(frozen=True)
class Actor:
    platform: str  # "telegram", "discord", "cli" or "shell"
    user_id: str
    display_name: str = ""
    chat_id: str | None = None  # Telegram chat or Discord channel
    guild_id: str | None = None  # Discord only
    roles: tuple[str, ...] = ()  # Discord role ids of the member in this guild, as Discord sent them
    # Discord: the member has Manage Server (or Administrator) in this guild; Telegram: an administrator of this
    # group, where the front end asked (only for the group's own settings)
    manages_guild: bool = False
    locale: str | None = None  # the language the platform reports (Telegram language_code, Discord locale)

    @property
    def key(self) -> str:
        return f"{self.platform}:{self.user_id}"

    @property
    def scope(self) -> str:
        """The settings scope this event falls under (pause, limits, channels)."""
        if self.guild_id:
            return f"discord:guild:{self.guild_id}"
        return "global"


SHELL_ACTOR = Actor(platform=SHELL, user_id="operator")
