"""Budget alerts to the bot's admins: each threshold a worker noted is told once, by the process with chats."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Protocol, runtime_checkable

from bot import messages
from engine.budget import BudgetGuard
from storage import budget
from storage.db import Database

log = logging.getLogger(__name__)

POLL_S = 5.0


@runtime_checkable
class Notifier(Protocol):
    """A front end that can write to one of its users directly (a private chat, a DM)."""

    async def notify(self, user_id: str, text: str) -> None: ...


class BudgetAlerts:
    """Sends the budget thresholds reached (``storage.budget.reach``) to ``LIKENESS_ADMINS`` and keeps the
    budget gauges of this process current."""

    def __init__(
        self,
        db: Database,
        frontends: Mapping[str, object],
        admins: list[str],
        guard: BudgetGuard | None,
        *,
        poll_s: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db, self.admins, self.guard, self.clock = db, list(admins), guard, clock
        self.poll_s = POLL_S if poll_s is None else poll_s
        self.frontends = {name: frontend for name, frontend in frontends.items() if isinstance(frontend, Notifier)}

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.once()
            except Exception:
                log.exception("budget alerts failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.poll_s)

    async def once(self) -> int:
        """Tell the admins every alert not told yet; returns how many were sent."""
        if self.guard is not None:
            await self.guard.refresh_gauges()
        sent = 0
        for alert in await self.db.read(budget.unsent_alerts):
            claimed = await self.db.write(
                budget.mark_sent, day=alert.day, budget=alert.budget, threshold=alert.threshold, now=self.clock()
            )
            if not claimed:  # another process tells this one
                continue
            text = messages.budget_alert(alert.budget, alert.threshold, alert.used_usd, alert.limit_usd, alert.day)
            log.warning("budget alert: %s", text)
            for admin in self.admins:
                await self._tell(admin, text)
            sent += 1
        return sent

    async def _tell(self, admin: str, text: str) -> None:
        platform, _, user_id = admin.partition(":")
        frontend = self.frontends.get(platform)
        if frontend is None:
            return
        try:
            await frontend.notify(user_id, text)
        except Exception:  # one admin out of reach must not keep the others from hearing
            log.warning("could not tell admin %s about a budget", admin, exc_info=True)
