"""What the application needs from a front end (Discord, Telegram): start, stop, deliver, show progress."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, TypeVar

from bot.service.replies import Reply

Target = TypeVar("Target")


class Undeliverable(Exception):
    """The result can never reach the user (they blocked the bot, the chat is gone)."""


class PlatformFrontEnd(Protocol[Target]):
    """A front end, with the type of reply target it stores with its jobs."""

    platform: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def parse_target(self, data: Mapping[str, Any]) -> Target:
        """The typed reply target from the JSON a job stores (written by the target's own ``to_json``)."""

    async def deliver(self, job_id: str, target: Target, reply: Reply) -> str:
        """Post a finished job's reply where the job asked for it; returns the path used (e.g. "reply",
        "channel", "dm"). Raises Undeliverable when no path can ever work; any other error is retried."""

    async def show_progress(self, job_id: str, target: Target, text: str) -> None:
        """Update the job's status message (coalesced by the caller)."""


# Delivery and progress edits hold the front ends of every platform side by side; each reads its own targets.
FrontEnd = PlatformFrontEnd[Any]
