"""Notifications between processes sharing the database: PostgreSQL LISTEN/NOTIFY; none on SQLite.

Notifications only wake and inform: one may be lost (a dropped connection, a process that was not
listening yet), so every reader keeps a slow poll of the tables as the truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Protocol

import asyncpg

from storage.db import Database

log = logging.getLogger(__name__)

JOBS = "jobs"  # a job was queued: workers look for work
PROGRESS = "progress"  # a running job's progress, and its end: whoever shows or delivers it

Listener = Callable[[str], None]


class Notifier(Protocol):
    @property
    def connected(self) -> bool:
        """True while notifications from other processes arrive."""

    def listen(self, topic: str, listener: Listener) -> None:
        """Call ``listener(payload)`` for every notification on ``topic`` (this process's own included).
        Listeners are called on the event loop and must not block."""

    async def send(self, topic: str, payload: str = "") -> None:
        """Notify every listening process; dropped when not connected."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class NoNotifier:
    """SQLite: nothing crosses processes; in-process events go through the progress hub."""

    connected = False

    def listen(self, topic: str, listener: Listener) -> None:
        pass

    async def send(self, topic: str, payload: str = "") -> None:
        pass

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass


class PgNotifier:
    """LISTEN/NOTIFY on one asyncpg connection of its own (not the pool's: a listening connection must
    stay open; through PgBouncer it needs session pooling). Reconnects after ``retry_s`` when it drops."""

    def __init__(self, dsn: str, *, namespace: str = "public", retry_s: float = 5.0) -> None:
        self.dsn, self.retry_s = dsn, retry_s
        # Deployments (and test runs) sharing one database in several schemas hear only their own.
        self._prefix = f"likeness.{namespace}."
        self._listeners: dict[str, list[Listener]] = {}
        self._conn: Any = None
        self._send_lock = asyncio.Lock()
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def channel(self, topic: str) -> str:
        return self._prefix + topic

    def listen(self, topic: str, listener: Listener) -> None:
        self._listeners.setdefault(topic, []).append(listener)

    async def start(self) -> None:
        """Connect in the background; waits briefly for the first connection so early events are heard."""
        self._task = asyncio.create_task(self._supervise(), name="notifications")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), 5.0)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._disconnect()

    async def send(self, topic: str, payload: str = "") -> None:
        conn = self._conn
        if conn is None or conn.is_closed():
            return
        try:
            async with self._send_lock:
                await conn.execute("SELECT pg_notify($1, $2)", self.channel(topic), payload)
        except Exception as exc:  # the poll finds what the notification would have announced
            log.warning("notification not sent topic=%s error=%s", topic, type(exc).__name__)

    async def _supervise(self) -> None:
        while True:
            closed = asyncio.Event()
            try:
                conn = await asyncpg.connect(self.dsn)
                conn.add_termination_listener(lambda _conn, closed=closed: closed.set())
                for topic in self._listeners:
                    await conn.add_listener(self.channel(topic), self._receiver(topic))
                self._conn = conn
                self._connected.set()
                log.info("listening for notifications")
                await closed.wait()
                log.warning("notification connection closed; polling until it is back")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("cannot listen for notifications (%s); polling meanwhile", type(exc).__name__)
            self._connected.clear()
            await self._disconnect()
            await asyncio.sleep(self.retry_s)

    def _receiver(self, topic: str) -> Callable[..., None]:
        def receive(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
            for listener in list(self._listeners.get(topic, ())):
                try:
                    listener(payload)
                except Exception:
                    log.exception("notification listener failed topic=%s", topic)

        return receive

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        self._connected.clear()
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)


def open_notifier(db: Database) -> Notifier:
    """LISTEN/NOTIFY on PostgreSQL, nothing on SQLite."""
    if db.is_sqlite:
        return NoNotifier()
    return PgNotifier(db.url.replace("postgresql+asyncpg://", "postgresql://", 1), namespace=db.schema or "public")
