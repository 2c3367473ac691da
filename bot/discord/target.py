"""Where a Discord job is answered: the interaction token while it lasts, then the channel, then a DM."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PLATFORM = "discord"
ORIGINAL = "@original"  # the stored name of a status message that is the interaction's own response


@dataclass(frozen=True)
class DiscordTarget:
    application_id: int
    token: str
    token_expires: float  # epoch seconds: the interaction token works for 15 minutes
    channel_id: int
    user_id: int
    guild_id: int | None = None
    status_message_id: int | None = None  # None: the status is the original response, not editable by id
    nsfw: bool = False  # asked in an age-restricted channel: results there are not blurred
    size_limit: int | None = None  # bytes per uploaded file where it was asked (boosts raise it); None: unknown

    def to_json(self) -> dict[str, Any]:
        return {
            "platform": PLATFORM,
            "application_id": str(self.application_id),
            "token": self.token,
            "token_expires": self.token_expires,
            "channel_id": str(self.channel_id),
            "guild_id": None if self.guild_id is None else str(self.guild_id),
            "user_id": str(self.user_id),
            "status_message": ORIGINAL if self.status_message_id is None else str(self.status_message_id),
            "nsfw": self.nsfw,
            "size_limit": self.size_limit,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DiscordTarget:
        if data.get("platform") != PLATFORM:
            raise ValueError(f"not a Discord reply target: {data.get('platform')!r}")
        guild = data.get("guild_id")
        status = str(data.get("status_message") or "")
        size_limit = data.get("size_limit")
        return cls(
            application_id=int(data["application_id"]),
            token=str(data.get("token") or ""),
            token_expires=float(data.get("token_expires") or 0),
            channel_id=int(data["channel_id"]),
            user_id=int(data["user_id"]),
            guild_id=int(guild) if guild else None,
            status_message_id=int(status) if status.isdigit() else None,
            nsfw=bool(data.get("nsfw")),
            size_limit=int(size_limit) if size_limit else None,
        )
