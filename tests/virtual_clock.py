"""A virtual clock for tests: sleeping moves time forward at once, so backoffs and polls cost nothing."""

from __future__ import annotations

import asyncio


class VirtualClock:
    """Implements ``engine.clock.Clock``. ``sleep`` advances time and yields once to the event loop;
    ``sleeps`` records every wait so a test can check the schedule."""

    def __init__(self, start: float = 1_700_000_000.0, jitter: float = 0.5) -> None:
        self.now = start
        self.fixed_jitter = jitter
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)

    def jitter(self) -> float:
        return self.fixed_jitter

    def advance(self, seconds: float) -> None:
        self.now += seconds


class ManualClock(VirtualClock):
    """A virtual clock on which ``sleep`` waits until the test moves time past its end (``advance``), so
    loops that sleep (heartbeats, claim polls) stay parked instead of spinning through virtual time."""

    def __init__(self, start: float = 1_700_000_000.0, jitter: float = 0.5) -> None:
        super().__init__(start, jitter)
        self._parked: list[tuple[float, float, asyncio.Future[None]]] = []  # (wake at, asked for, waiter)
        self._changed = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        entry = (self.now + seconds, seconds, asyncio.get_running_loop().create_future())
        self._parked.append(entry)
        self._changed.set()
        try:
            await entry[2]
        finally:
            if entry in self._parked:  # cancelled before its time
                self._parked.remove(entry)

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for entry in [e for e in self._parked if e[0] <= self.now]:
            self._parked.remove(entry)
            if not entry[2].done():
                entry[2].set_result(None)

    def parked(self) -> list[tuple[float, float]]:
        """(seconds until it wakes, seconds it asked for) of each parked sleeper, soonest first."""
        return sorted((at - self.now, asked) for at, asked, _ in self._parked)

    async def changed(self) -> None:
        """Wait until a sleeper parks."""
        self._changed.clear()
        await self._changed.wait()
