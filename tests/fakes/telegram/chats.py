"""The chats the fake knows and every message in them, numbered per chat as on Telegram."""

from __future__ import annotations

import itertools
import time
from typing import Any

from tests.fakes.telegram.models import JSON, BotMessage, TgChat, TgUser
from tests.fakes.telegram.protocol import bad


class Chats:
    """Users, private chats and groups, the messages each chat holds, and the bot's own messages in them."""

    def __init__(self) -> None:
        self._user_ids = itertools.count(100_001)
        self._group_ids = itertools.count(1)
        self._chats: dict[int, TgChat] = {}
        self._messages: dict[int, dict[int, JSON]] = {}
        self._last_message_id: dict[int, int] = {}
        self._sent: dict[int, list[BotMessage]] = {}
        self._records: dict[tuple[int, int], BotMessage] = {}

    # -- users and chats

    def new_user(
        self, first_name: str, last_name: str | None, username: str | None, language_code: str | None
    ) -> TgUser:
        return TgUser(next(self._user_ids), first_name, last_name, username, language_code)

    def private_chat(self, user: TgUser) -> TgChat:
        chat = self._chats.get(user.id)
        if chat is None:
            chat = self._chats[user.id] = TgChat(user.id, "private", user=user)
        return chat

    def group(self, title: str, *, supergroup: bool, username: str | None) -> TgChat:
        number = next(self._group_ids)
        chat_id = -1_001_000_000_000 - number if supergroup else -4_000_000_000 - number
        chat = TgChat(chat_id, "supergroup" if supergroup else "group", title=title, username=username)
        self._chats[chat_id] = chat
        return chat

    def channel(self, title: str, *, username: str | None) -> TgChat:
        number = next(self._group_ids)
        chat = TgChat(-1_001_000_000_000 - number, "channel", title=title, username=username)
        self._chats[chat.id] = chat
        return chat

    def chat_of(self, who: TgUser | TgChat | int) -> TgChat:
        if isinstance(who, TgUser):
            return self.private_chat(who)
        if isinstance(who, TgChat):
            return self._chats.setdefault(who.id, who)
        return self._chats[who]

    def resolve(self, value: Any) -> TgChat:
        """The chat a ``chat_id`` parameter names: a number, or ``@username`` of a public chat."""
        if value is None or value == "":
            raise bad("chat_id is empty")
        if isinstance(value, str) and value.startswith("@"):
            found = next((c for c in self._chats.values() if c.username and f"@{c.username}" == value), None)
            if found is None:
                raise bad("chat not found")
            return found
        try:
            chat = self._chats.get(int(value))
        except (TypeError, ValueError):
            chat = None
        if chat is None:
            raise bad("chat not found")
        return chat

    # -- messages

    def new_message(self, chat: TgChat, sender: JSON | None) -> JSON:
        """A Message with the chat's next id, not yet kept; a channel post has no sender."""
        message_id = self._last_message_id.get(chat.id, 0) + 1
        self._last_message_id[chat.id] = message_id
        message: JSON = {"message_id": message_id, "chat": chat.to_json(), "date": int(time.time())}
        if sender is not None:
            message["from"] = sender
        return message

    def keep(self, chat_id: int, message: JSON) -> None:
        self._messages.setdefault(chat_id, {})[message["message_id"]] = message

    def holds(self, chat_id: int, message_id: int) -> bool:
        return message_id in self._messages.get(chat_id, {})

    def delete(self, chat_id: int, message_id: int) -> bool:
        """Whether there was such a message; the bot's record of it is marked deleted."""
        if self._messages.get(chat_id, {}).pop(message_id, None) is None:
            return False
        if record := self._records.get((chat_id, message_id)):
            record.deleted = True
        return True

    def reply_snapshot(self, chat_id: int, message_id: int) -> JSON | None:
        """The message as a reply_to_message shows it, without the message it replied to in turn."""
        target = self._messages.get(chat_id, {}).get(message_id)
        if target is None:
            return None
        return {key: value for key, value in target.items() if key != "reply_to_message"}

    # -- what the bot sent

    def record(self, record: BotMessage) -> None:
        self.keep(record.chat_id, record.raw)
        self._sent.setdefault(record.chat_id, []).append(record)
        self._records[(record.chat_id, record.message_id)] = record

    def record_of(self, chat_id: int, message_id: int) -> BotMessage | None:
        return self._records.get((chat_id, message_id))

    def sent(self, chat_id: int) -> list[BotMessage]:
        """The bot's messages in the chat, oldest first (the list itself, which grows as the bot sends)."""
        return self._sent.setdefault(chat_id, [])

    def all_sent(self) -> list[BotMessage]:
        return [message for messages in self._sent.values() for message in messages]
