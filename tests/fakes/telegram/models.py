"""The Bot API objects a test meets: simulated users and chats, and records of what the bot did."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

JSON = dict[str, Any]


@dataclass(frozen=True)
class TgUser:
    """A simulated Telegram user."""

    id: int
    first_name: str
    last_name: str | None = None
    username: str | None = None
    language_code: str | None = "en"
    is_bot: bool = False

    def to_json(self) -> JSON:
        data: JSON = {"id": self.id, "is_bot": self.is_bot, "first_name": self.first_name}
        for key in ("last_name", "username", "language_code"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        return data


# The placeholder senders Telegram puts in "from" when a message is sent on behalf of a chat (its
# "sender_chat"): a linked channel's post forwarded into the discussion group, an anonymous group admin,
# and a user posting as one of their channels.
SERVICE_NOTIFICATIONS = TgUser(777000, "Telegram", language_code=None)
GROUP_ANONYMOUS_BOT = TgUser(1087968824, "Group", username="GroupAnonymousBot", language_code=None, is_bot=True)
CHANNEL_BOT = TgUser(136817688, "Channel", username="Channel_Bot", language_code=None, is_bot=True)


@dataclass(frozen=True)
class TgChat:
    """A simulated chat; a private chat has the id of its user, as on Telegram."""

    id: int
    type: str
    title: str | None = None
    username: str | None = None
    user: TgUser | None = None

    def to_json(self) -> JSON:
        data: JSON = {"id": self.id, "type": self.type}
        if self.type == "private" and self.user is not None:
            data["first_name"] = self.user.first_name
            if self.user.last_name:
                data["last_name"] = self.user.last_name
            if self.user.username:
                data["username"] = self.user.username
        else:
            data["title"] = self.title or ""
            if self.username:
                data["username"] = self.username
        return data


@dataclass
class StoredFile:
    """A file the fake serves through getFile and the download route."""

    file_id: str
    file_unique_id: str
    file_path: str
    data: bytes
    declared_size: int


@dataclass
class BotMessage:
    """One message the bot sent, kept up to date with its edits and deletion."""

    chat_id: int
    message_id: int
    method: str
    raw: JSON
    photo: bytes | None = None
    document: bytes | None = None
    filename: str | None = None
    mime_type: str | None = None
    reply_markup: JSON | None = None
    history: list[JSON] = field(default_factory=list)
    deleted: bool = False

    @property
    def text(self) -> str | None:
        return self.raw.get("text")

    @property
    def caption(self) -> str | None:
        return self.raw.get("caption")

    @property
    def media_group_id(self) -> str | None:
        return self.raw.get("media_group_id")

    @property
    def reply_to_message_id(self) -> int | None:
        reply = self.raw.get("reply_to_message")
        return None if reply is None else int(reply["message_id"])

    @property
    def edited(self) -> bool:
        return bool(self.history)

    @property
    def buttons(self) -> list[JSON]:
        """The inline keyboard's buttons, row by row, as currently shown."""
        markup = self.raw.get("reply_markup") or {}
        return [button for row in markup.get("inline_keyboard", []) for button in row]


@dataclass(frozen=True)
class CallbackAnswer:
    """The bot's answerCallbackQuery for one button press."""

    query_id: str
    text: str | None
    show_alert: bool
    url: str | None
    cache_time: int


@dataclass
class ApiCall:
    """One Bot API request as the fake received and answered it."""

    method: str
    params: JSON
    status: int = 200
    description: str | None = None
    at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class WebhookDelivery:
    """One attempt to push an update to the bot's webhook."""

    update_id: int
    status: int | None
    error: str | None
