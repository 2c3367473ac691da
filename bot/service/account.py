"""A user's own account: the welcome, help, their history, their quota, and forgetting their data."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable

from bot import messages
from bot.errors import UserError
from bot.service.actors import Actor
from bot.service.replies import Action, Button, Reply
from bot.service.shop import Shop
from bot.service.users import Users
from storage import history, quota
from storage.blobs import BlobStore
from storage.db import Database
from storage.quota import utc_day
from storage.settings import CreditSettings

log = logging.getLogger(__name__)

HISTORY_PAGE = 5


class Account:
    def __init__(
        self,
        *,
        db: Database,
        blobs: BlobStore,
        users: Users,
        credits: CreditSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db, self.blobs, self.users, self.credits, self.clock = db, blobs, users, credits, clock
        self.shop: Shop | None = None  # set where credits are sold: /quota lists the last purchases

    async def start(self, actor: Actor) -> Reply:
        user = await self.users.of(actor)
        return Reply(messages.welcome(user.credits - user.reserved))

    @staticmethod
    def help() -> Reply:
        return Reply(messages.HELP)

    async def history(self, actor: Actor, page: int = 0) -> Reply:
        """One page of the user's jobs, newest first, with buttons to the neighbouring pages."""
        user = await self.users.of(actor)
        page = max(0, page)
        found, total = await self.db.read(
            history.page, user_id=user.id or 0, offset=page * HISTORY_PAGE, limit=HISTORY_PAGE
        )
        if not found:
            return Reply(messages.NO_HISTORY)
        lines = [messages.history_line(_date(job.created_at), job) for job in found]
        pages = (total + HISTORY_PAGE - 1) // HISTORY_PAGE
        buttons = []
        if page > 0:
            buttons.append(Button("◀ Newer", Action.HISTORY, str(page - 1)))
        if page + 1 < pages:
            buttons.append(Button("Older ▶", Action.HISTORY, str(page + 1)))
        return Reply(messages.history_page(lines, page + 1, pages), tuple(buttons))

    async def quota(self, actor: Actor) -> Reply:
        user = await self.users.of(actor)
        used = user.day_jobs if user.day == utc_day(self.clock()) else 0
        limit = await self.db.read(quota.daily_limit, user_id=user.id or 0, daily_jobs_default=self.credits.daily_jobs)
        text = messages.quota_text(
            available=user.credits - user.reserved,
            reserved=user.reserved,
            used_today=used,
            daily_limit=limit,
            per_image=self.credits.per_image,
            unlimited=user.unlimited,
        )
        bought = await self.shop.recent(user.id or 0) if self.shop is not None else []
        return Reply(text + ("\n" + messages.purchases_text(bought) if bought else ""))

    @staticmethod
    def forget(actor: Actor) -> Reply:
        """Ask first: forgetting cannot be undone."""
        return Reply(
            messages.FORGET_CONFIRM,
            (Button("Delete everything", Action.FORGET, "yes"), Button("Keep", Action.FORGET, "no")),
        )

    async def forget_confirmed(self, actor: Actor, confirmed: bool) -> Reply:
        if not confirmed:
            return Reply(messages.FORGET_KEPT)
        user = await self.users.of(actor)
        freed = await self.db.write(history.forget, user_id=user.id or 0)
        if freed is None:
            raise UserError(messages.FORGET_BUSY)
        for key in freed:
            await self.blobs.delete(key)
        log.info("user %s asked to forget their data; %d blobs deleted", user.id, len(freed))
        return Reply(messages.FORGOTTEN)


def _date(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M")
