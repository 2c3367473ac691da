"""Finished jobs on their way to the user: what to deliver, where, and whether it arrived."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bot import i18n, messages
from bot.service.replies import Action, Button, Reply, ReplyImage
from engine.changes import Change, job_changes
from storage import delivery, jobs, users
from storage.blobs import BlobStore
from storage.db import Database
from storage.models import Job
from storage.states import DeliveryState, JobState

EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}


def extension(content_type: str) -> str:
    return EXTENSIONS.get(content_type, "img")


@dataclass(frozen=True)
class JobTarget:
    """A job's reply target as stored: JSON that the front end named by its "platform" key reads back."""

    job_id: str
    data: Mapping[str, Any] = field(repr=False)
    language: str = i18n.SOURCE  # of the job's user: what is shown there is in it
    changes: tuple[Change, ...] = ()  # what rendering it changes of what was asked, told in its status
    first: str | None = None  # the backend its route starts with
    queued: bool = False  # still waiting in the queue

    @property
    def platform(self) -> str:
        return str(self.data.get("platform", ""))


@dataclass(frozen=True)
class PendingResult:
    """A finished job whose reply is still owed: where it goes and how far earlier tries got."""

    target: JobTarget
    parts_sent: int = 0  # messages of the reply already posted
    attempts: int = 0  # tries that failed so far
    failing_since: float | None = None  # when the first try failed

    @property
    def job_id(self) -> str:
        return self.target.job_id


class Results:
    def __init__(
        self,
        *,
        db: Database,
        blobs: BlobStore,
        default_language: str = i18n.SOURCE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db, self.blobs, self.clock = db, blobs, clock
        self.default_language = default_language

    async def pending(self, platforms: Sequence[str], limit: int = 100) -> list[PendingResult]:
        """Finished jobs of these platforms' users whose result still has to be delivered and whose next try
        is due, oldest first."""
        found = await self.db.read(
            delivery.pending_deliveries, platforms=list(platforms), now=self.clock(), limit=limit
        )
        return [
            PendingResult(
                JobTarget(job.id, job.reply_target),
                job.delivery_parts,
                job.delivery_attempts,
                job.delivery_failing_since,
            )
            for job in found
        ]

    async def reply(self, job_id: str) -> Reply | None:
        """What to deliver for a finished job; None if the job is gone (its user asked to forget it)."""
        job = await self.db.read(jobs.get, job_id=job_id)
        if job is None:
            return None
        with i18n.language(await self.language(job_id)):
            return await self._reply(job)

    async def language(self, job_id: str) -> str:
        """The language of the job's user: their choice, else what their platform last reported."""
        found = await self.db.read(users.job_user_language, job_id=job_id)
        chosen, reported = found if found is not None else (None, None)
        return i18n.resolve(chosen, reported, self.default_language)

    async def delivered(self, job_id: str, path: str) -> None:
        await self._mark(job_id, DeliveryState.DELIVERED, path)

    async def undeliverable(self, job_id: str) -> bool:
        """The result will never arrive: stop trying, and refund it if it was charged. False if its delivery
        had already ended."""
        return await self.db.write(delivery.give_up, job_id=job_id, now=self.clock())

    async def parts_sent(self, job_id: str, parts: int) -> None:
        """The reply's first ``parts`` messages are posted: a later try starts after them."""
        await self.db.write(delivery.record_parts, job_id=job_id, parts=parts, now=self.clock())

    async def retry_at(self, job_id: str, when: float) -> int:
        """A try failed for a reason that may pass: try again at ``when``. Returns the failed tries so far."""
        return await self.db.write(delivery.retry_delivery, job_id=job_id, next_at=when, now=self.clock())

    async def progress_target(self, job_id: str) -> JobTarget | None:
        """Where to show a running job's progress; None once it finished (the result replaces the status)."""
        job = await self.db.read(jobs.get, job_id=job_id)
        if job is None or job.delivery_state != DeliveryState.NONE:
            return None
        return JobTarget(
            job.id,
            job.reply_target,
            await self.language(job_id),
            job_changes(job.params),
            job.route[0] if job.route else None,
            job.state == JobState.QUEUED,
        )

    async def succeeded(self, job_id: str) -> bool:
        job = await self.db.read(jobs.get, job_id=job_id)
        return job is not None and job.state == JobState.SUCCEEDED

    async def shown(self, job: Job) -> Reply:
        """A finished job's result as it was delivered, to show it again (history's Open)."""
        return await self._reply(job)

    async def _mark(self, job_id: str, state: DeliveryState, path: str | None) -> None:
        await self.db.write(delivery.mark_delivery, job_id=job_id, state=state, path=path, now=self.clock())

    async def _reply(self, job: Job) -> Reply:
        if job.state == JobState.SUCCEEDED:
            images = []
            stored = await self.db.read(jobs.images_of, job_id=job.id)
            for image in stored:
                images.append(
                    ReplyImage(
                        await self.blobs.get(image.blob_key),
                        image.content_type,
                        image.width,
                        image.height,
                        image.nsfw,
                        f"likeness-{image.index + 1}.{extension(image.content_type)}",
                    )
                )
            buttons = (
                Button(messages.REROLL_BUTTON, Action.REROLL, job.id),
                Button(messages.VARY_BUTTON, Action.VARY, job.id),
            )
            return Reply(messages.result_caption(job, [image.likeness for image in stored]), buttons, tuple(images))
        if job.state == JobState.CANCELLED:
            return Reply(messages.CANCELLED_REFUNDED)
        return Reply(messages.failure(job.error or "", job.cost))
