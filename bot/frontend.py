"""What the application needs from a front end (Discord, Telegram): start, stop, deliver, show progress."""

from __future__ import annotations

from typing import Any, Protocol

from bot.service.replies import Reply
from storage.models import Job


class Undeliverable(Exception):
    """The result can never reach the user (they blocked the bot, the chat is gone)."""


class FrontEnd(Protocol):
    platform: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def deliver(self, job: Job, reply: Reply) -> str:
        """Post a finished job's reply where the job asked for it; returns the path used (e.g. "reply",
        "channel", "dm"). Raises Undeliverable when no path can ever work; any other error is retried."""

    async def show_progress(self, reply_target: dict[str, Any], job_id: str, text: str) -> None:
        """Update the job's status message (coalesced by the caller)."""
