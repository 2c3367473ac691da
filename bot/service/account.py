"""A user's own account: the welcome, help, their history, their quota, the privacy notice, and forgetting their
data."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable

from bot import messages
from bot.errors import UserError
from bot.service.actors import Actor
from bot.service.replies import Action, Button, Menu, MenuEntry, Reply
from bot.service.results import Results
from bot.service.shop import Shop
from bot.service.users import Users
from storage import history, jobs, quota, users
from storage.blobs import BlobStore
from storage.db import Database
from storage.models import Job
from storage.quota import utc_day
from storage.settings import CreditSettings
from storage.states import JobState

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
        retention_days: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db, self.blobs, self.users, self.credits, self.clock = db, blobs, users, credits, clock
        self.retention_days = retention_days
        self.shop: Shop | None = None  # set where credits are sold: /quota lists the last purchases
        self.results: Results | None = None  # set by the service: a history entry's result shown again

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
        lines = [messages.history_line(_date(job.created_at), job, number) for number, job in enumerate(found, 1)]
        pages = (total + HISTORY_PAGE - 1) // HISTORY_PAGE
        buttons = []
        if page > 0:
            buttons.append(Button(messages.NEWER_BUTTON, Action.HISTORY, str(page - 1)))
        if page + 1 < pages:
            buttons.append(Button(messages.OLDER_BUTTON, Action.HISTORY, str(page + 1)))
        entries = tuple(_entry(number, job) for number, job in enumerate(found, 1))
        menu = Menu(messages.HISTORY_PICK, Action.OPEN, entries)
        return Reply(messages.history_page(lines, page + 1, pages), tuple(buttons), menu=menu)

    async def open(self, actor: Actor, job_id: str) -> Reply:
        """One job of the user's history again: its result while it is kept, with Re-run."""
        user = await self.users.of(actor)
        job = await self.db.read(jobs.get, job_id=job_id)
        if job is None or job.user_id != user.id:
            raise UserError(messages.NOT_YOUR_JOB)
        rerun = (Button(messages.RERUN_BUTTON, Action.RERUN, job.id),) if not job.expired else ()
        if job.state == JobState.SUCCEEDED and not job.expired and self.results is not None:
            return await self.results.shown(job)
        return Reply(messages.history_line(_date(job.created_at), job), rerun)

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
            (
                Button(messages.FORGET_YES_BUTTON, Action.FORGET, "yes"),
                Button(messages.FORGET_NO_BUTTON, Action.FORGET, "no"),
            ),
        )

    async def forget_confirmed(self, actor: Actor, confirmed: bool) -> Reply:
        if not confirmed:
            return Reply(messages.FORGET_KEPT)
        user = await self.users.of(actor)
        forgotten = await self.db.write(history.forget, user_id=user.id or 0)
        if forgotten is None:
            raise UserError(messages.FORGET_BUSY)
        for key in forgotten.freed:
            await self.blobs.delete(key)
        log.info("user %s asked to forget their data; %d blobs deleted", user.id, len(forgotten.freed))
        return Reply(
            messages.forgotten(
                identities=forgotten.identities,
                photos=forgotten.photos,
                embeddings=forgotten.embeddings,
                results=forgotten.results,
                history=forgotten.history,
            )
        )

    async def privacy(self, actor: Actor) -> Reply:
        """The privacy notice, with the button to agree until the user has (then the date they did)."""
        user = await self.users.of(actor)
        if user.privacy_accepted_at is None:
            agree = Button(messages.PRIVACY_AGREE, Action.PRIVACY, "yes")
            return Reply(messages.privacy_notice(self.retention_days), (agree,))
        return Reply(messages.privacy_agreed_on(self.retention_days, _date(user.privacy_accepted_at)))

    async def accept_privacy(self, actor: Actor) -> Reply:
        """Record the user's agreement to the privacy notice, with its time (the first one counts)."""
        user = await self.users.of(actor)
        accepted = await self.db.write(users.accept_privacy, user_id=user.id or 0, now=self.clock())
        log.info("user %s agreed to the privacy notice", user.id)
        return Reply(messages.privacy_accepted(_date(accepted)))


def _date(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M")


def _entry(number: int, job: Job) -> MenuEntry:
    """A history entry as a menu lists it, with Re-run (photos still kept) and Open (a result to show)."""
    buttons = []
    if not job.expired:
        buttons.append(Button(messages.rerun_numbered(number), Action.RERUN, job.id))
        if job.state == JobState.SUCCEEDED:
            buttons.append(Button(messages.open_numbered(number), Action.OPEN, job.id))
    return MenuEntry(messages.history_entry(number, job), job.id, tuple(buttons))
