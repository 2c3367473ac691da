"""Where a Telegram job is answered: the chat, the message it replies to, and the status message to edit."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

PLATFORM = "telegram"


@dataclass(frozen=True)
class TelegramTarget:
    chat_id: int
    message_id: int | None = None  # the user's message (or the result a button was on) the reply answers
    status_message_id: int | None = None  # the bot's "Queued…" message, edited with progress, deleted at the end

    def with_status(self, message_id: int) -> TelegramTarget:
        return replace(self, status_message_id=message_id)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"platform": PLATFORM, "chat_id": self.chat_id, "message_id": self.message_id}
        if self.status_message_id is not None:
            data["status_id"] = self.status_message_id
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TelegramTarget:
        if data.get("platform") != PLATFORM:
            raise ValueError(f"not a Telegram reply target: {data.get('platform')!r}")
        return cls(
            chat_id=int(data["chat_id"]),
            message_id=_optional_int(data.get("message_id")),
            status_message_id=_optional_int(data.get("status_id")),
        )


def _optional_int(value: Any) -> int | None:
    return None if value in (None, "") else int(value)
