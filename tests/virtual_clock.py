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
