"""One source of time for the engine: wall time, monotonic time, sleeping and jitter, swapped in tests."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Protocol


class Clock(Protocol):
    """Everything in the engine that reads time, waits or draws jitter goes through one of these, so a test
    can run hours of retries, polls and backoffs on a virtual clock without really waiting."""

    def time(self) -> float:
        """Wall-clock seconds since the epoch (ledger timestamps, leases, deadlines)."""

    def monotonic(self) -> float:
        """Seconds that never go backwards (timeouts and polling budgets)."""

    async def sleep(self, seconds: float) -> None: ...

    def jitter(self) -> float:
        """A random number in [0, 1)."""


class SystemClock:
    """The real clock."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def jitter(self) -> float:
        return random.random()


SYSTEM_CLOCK = SystemClock()


def backoff_delay(
    attempt: int,
    *,
    base_s: float,
    cap_s: float,
    jitter: float,
    retry_after_s: float | None = None,
    floor_s: float = 0.0,
) -> float:
    """Seconds to wait before retry number ``attempt`` (1 for the first retry).

    Exponential from ``base_s`` up to ``cap_s`` with "equal jitter" (half fixed, half random: retries from
    many jobs spread out, yet never come back at once); a server's Retry-After is a lower bound, and so is
    ``floor_s`` (some providers ask for a minimum gap between calls).
    """
    exponential = min(cap_s, base_s * 2.0 ** max(0, attempt - 1))
    delay = exponential * (0.5 + jitter / 2)
    return max(delay, retry_after_s or 0.0, floor_s)
