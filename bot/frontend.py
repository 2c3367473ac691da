"""What the application needs from a front end (Discord, Telegram): start, stop, deliver, show progress."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from bot.service.replies import Reply

Target = TypeVar("Target")


class Undeliverable(Exception):
    """The result can never reach the user (they blocked the bot, the chat is gone): stop trying."""


class DeliveryDeferred(Exception):
    """The platform refused for now (an outage, a rate limit): try again later, no sooner than
    ``retry_after_s`` when the platform said so. Any other error from ``deliver`` is retried too."""

    def __init__(self, reason: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


class DeliveryParts:
    """The messages of one reply, in order, as far as earlier tries got: a try resumes after the last one
    that arrived instead of posting it again, and records each one it posts."""

    def __init__(self, sent: int = 0, record: Callable[[int], Awaitable[None]] | None = None) -> None:
        self.sent, self._record = sent, record

    async def send(self, messages: Sequence[Callable[[], Awaitable[object]]]) -> None:
        """Post the reply's messages not yet posted, recording each as it arrives."""
        for index, post in enumerate(messages):
            if index < self.sent:
                continue
            await post()
            self.sent = index + 1
            if self._record is not None:
                await self._record(self.sent)


class PlatformFrontEnd(Protocol[Target]):
    """A front end, with the type of reply target it stores with its jobs."""

    platform: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def parse_target(self, data: Mapping[str, Any]) -> Target:
        """The typed reply target from the JSON a job stores (written by the target's own ``to_json``)."""

    async def deliver(self, job_id: str, target: Target, reply: Reply, parts: DeliveryParts | None = None) -> str:
        """Post a finished job's reply where the job asked for it, its messages through ``parts`` (so a retry
        posts only those still missing); returns the path used (e.g. "reply", "channel", "dm"). Raises
        Undeliverable when no path can ever work, DeliveryDeferred when the platform is unavailable for now;
        any other error is retried too."""

    async def show_progress(self, job_id: str, target: Target, text: str) -> None:
        """Update the job's status message (coalesced by the caller)."""


# Delivery and progress edits hold the front ends of every platform side by side; each reads its own targets.
FrontEnd = PlatformFrontEnd[Any]
