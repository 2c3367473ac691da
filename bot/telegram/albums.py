"""Albums: Telegram sends each photo of an album as its own update; they are gathered here into one request."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

Part = TypeVar("Part")

QUIET_S = 1.0  # an album's parts arrive within moments of each other
TTL_S = 600.0  # how long a handed-out album is remembered, so late or re-sent parts start nothing new
MAX_PARTS = 10  # Telegram's own limit on the items of one album


@dataclass
class _Group(Generic[Part]):
    parts: list[Part]
    last: float  # when the latest part arrived


class AlbumBuffer(Generic[Part]):
    """The parts of open albums by media_group_id, and which albums are due.

    An album is due once no part of it arrived for ``quiet_s``. Once handed out, its id is remembered for
    ``ttl_s``: a part arriving after that (late, or re-sent by Telegram) is refused instead of starting a
    second request; after ``ttl_s`` the id is forgotten, so memory stays bounded. Time is passed in, so
    the rules are tested without waiting.
    """

    def __init__(self, *, quiet_s: float = QUIET_S, ttl_s: float = TTL_S, max_parts: int = MAX_PARTS) -> None:
        self.quiet_s, self.ttl_s, self.max_parts = quiet_s, ttl_s, max_parts
        self._open: dict[str, _Group[Part]] = {}
        self._handed_out: dict[str, float] = {}  # album id -> when it was handed out

    def add(self, album: str, part: Part, now: float) -> bool:
        """Keep a part; False when it is refused (its album was handed out already, or is full)."""
        self._forget_before(now - self.ttl_s)
        if album in self._handed_out:
            return False
        group = self._open.get(album)
        if group is None:
            self._open[album] = _Group([part], now)
            return True
        if len(group.parts) >= self.max_parts:
            return False
        group.parts.append(part)
        group.last = now
        return True

    def due(self, now: float) -> list[list[Part]]:
        """Hand out every album that has been quiet for ``quiet_s``, parts in arrival order."""
        ready = [album for album, group in self._open.items() if group.last + self.quiet_s <= now]
        for album in ready:
            self._handed_out[album] = now
        return [self._open.pop(album).parts for album in ready]

    def next_due(self) -> float | None:
        """When the next album falls due if no further part arrives; None with no album open."""
        return min((group.last + self.quiet_s for group in self._open.values()), default=None)

    @property
    def open_albums(self) -> int:
        return len(self._open)

    def _forget_before(self, cutoff: float) -> None:
        for album in [album for album, at in self._handed_out.items() if at < cutoff]:
            del self._handed_out[album]


class AlbumCollector(Generic[Part]):
    """Runs an AlbumBuffer on the event loop: one timer for the next due album, ``handle`` called for each
    album as a task of its own, so no update handler waits for the rest of its album."""

    def __init__(
        self,
        handle: Callable[[list[Part]], Coroutine[Any, Any, None]],
        *,
        quiet_s: float = QUIET_S,
        ttl_s: float = TTL_S,
    ) -> None:
        self.buffer: AlbumBuffer[Part] = AlbumBuffer(quiet_s=quiet_s, ttl_s=ttl_s)
        self._handle = handle
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._running: set[asyncio.Task[None]] = set()

    def add(self, album: str, part: Part) -> bool:
        """Keep a part of an album; False when it was refused (see AlbumBuffer.add)."""
        loop = asyncio.get_running_loop()
        kept = self.buffer.add(album, part, loop.time())
        self._schedule(loop)
        return kept

    async def close(self) -> None:
        """Drop the albums still gathering and wait for those being handled."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.buffer.open_albums:
            log.info("%d album(s) still gathering dropped at shutdown", self.buffer.open_albums)
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        at = self.buffer.next_due()
        if at is not None:
            self._timer_at = at
            self._timer = loop.call_at(at, self._fire, loop)

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        # The loop may run a timer a clock tick early; the album it was set for is due all the same.
        for parts in self.buffer.due(max(loop.time(), self._timer_at)):
            task = loop.create_task(self._handle(parts), name="telegram-album")
            self._running.add(task)
            task.add_done_callback(self._finished)
        self._schedule(loop)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("handling an album failed", exc_info=task.exception())
