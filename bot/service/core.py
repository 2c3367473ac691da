"""The service: every use case a front end offers, taking neutral input and returning neutral replies."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from bot import messages
from bot.errors import UserError
from bot.intake import normalize_photo
from bot.service.actors import Actor
from bot.service.admin import AdminService
from bot.service.options import parse_prompt
from bot.service.replies import Action, Button, Reply, ReplyImage, Submitted
from bot.settings import Settings
from engine.capabilities import Range
from engine.events import JobProgress, ProgressKind
from engine.request import GenerationRequest
from engine.routing import Router
from storage import history, identities, jobs, quota
from storage.blobs import BlobStore
from storage.db import Database
from storage.errors import DuplicateJob, QuotaRefused
from storage.models import Job, User
from storage.states import JobState

log = logging.getLogger(__name__)

MAX_PHOTOS = 4
HISTORY_PAGE = 5
EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}


@dataclass(frozen=True)
class ImagineInput:
    event_id: str  # the chat event's id: the job's idempotency key
    text: str  # the prompt, possibly with --options
    photos: tuple[bytes, ...] = ()
    face: str | None = None  # a saved identity by name; None: the photos, else the default identity
    params: dict[str, Any] = field(default_factory=dict)  # options given as structured fields
    reply_target: dict[str, Any] = field(default_factory=dict)


class LikenessService:
    def __init__(
        self,
        *,
        db: Database,
        blobs: BlobStore,
        router: Router,
        settings: Settings,
        notify: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db, self.blobs, self.router, self.settings = db, blobs, router, settings
        self.notify = notify
        self.clock = clock
        self.admin = AdminService(
            db,
            admins=settings.admins,
            admin_role=settings.discord.admin_role,
            welcome_credits=settings.credits.new_user,
            clock=clock,
        )

    # --- users ------------------------------------------------------------------------------------

    async def user(self, actor: Actor) -> User:
        return await self.db.write(
            quota.ensure_user,
            platform=actor.platform,
            platform_user_id=actor.user_id,
            now=self.clock(),
            welcome_credits=self.settings.credits.new_user,
            display_name=actor.display_name,
        )

    async def start(self, actor: Actor) -> Reply:
        user = await self.user(actor)
        return Reply(messages.welcome(user.credits - user.reserved))

    @staticmethod
    def help() -> Reply:
        return Reply(messages.HELP)

    async def _check_open(self, actor: Actor) -> None:
        """Refuse when an admin paused the bot here, or this channel is not one the guild allows."""
        for scope in dict.fromkeys(("global", actor.scope)):
            found = await self.db.read(quota.get_scope, scope=scope)
            if found is None:
                continue
            if found["paused"]:
                raise UserError(messages.paused_for_users(found["pause_reason"]))
            channels = found["channels"]
            if channels and actor.chat_id not in channels:
                raise UserError(messages.NOT_THIS_CHANNEL)

    # --- imagine ----------------------------------------------------------------------------------

    async def imagine(self, actor: Actor, given: ImagineInput) -> Submitted:
        await self._check_open(actor)
        existing = await self.db.read(jobs.get, job_id=given.event_id)
        if existing is not None:  # the platform delivered this event twice
            return await self._status(existing, duplicate=True)
        prompt, params = parse_prompt(given.text)
        params.update({k: v for k, v in given.params.items() if v is not None})
        user = await self.user(actor)
        face_keys = await self._faces(user, given)
        faces = tuple([await self.blobs.get(key) for key in face_keys])
        try:
            request = GenerationRequest(prompt=prompt, faces=faces, **params)
        except TypeError:
            raise UserError(messages.EMPTY_PROMPT) from None
        return await self._submit(user, given.event_id, request, face_keys, given.reply_target, kind="imagine")

    async def _faces(self, user: User, given: ImagineInput) -> list[str]:
        if given.photos:
            if len(given.photos) > MAX_PHOTOS:
                raise UserError(messages.TOO_MANY_PHOTOS.format(limit=MAX_PHOTOS))
            return [await self.blobs.put(await _normalized(photo)) for photo in given.photos]
        identity = await self.db.read(identities.find, user_id=user.id or 0, name=given.face)
        if identity is None:
            raise UserError(messages.NO_SUCH_FACE.format(name=given.face) if given.face else messages.NO_FACE_YET)
        return list(identity.photo_keys)

    async def _submit(
        self,
        user: User,
        job_id: str,
        request: GenerationRequest,
        face_keys: list[str],
        reply_target: dict[str, Any],
        *,
        kind: str,
        parent_id: str | None = None,
    ) -> Submitted:
        refusal = self.router.refusal(request)
        if refusal is not None:
            if refusal.problems:
                raise UserError(messages.no_backend(refusal.problems))
            log.error("no backend available: %s", "; ".join(refusal.unavailable))
            raise UserError(messages.NO_BACKEND_UP)
        cost = self.settings.credits.per_image * request.num_images
        try:
            await self.db.write(
                jobs.submit,
                job=jobs.NewJob(
                    id=job_id,
                    user_id=user.id or 0,
                    params=request.to_params(),
                    cost=cost,
                    face_keys=face_keys,
                    route=list(self.router.route),
                    reply_target=reply_target,
                    kind=kind,
                    parent_id=parent_id,
                    deadline_s=self.settings.queue.job_deadline_s,
                ),
                now=self.clock(),
                daily_jobs_default=self.settings.credits.daily_jobs,
            )
        except QuotaRefused as refused:
            raise UserError(messages.refusal(refused)) from None
        except DuplicateJob:
            existing = await self.db.read(jobs.get, job_id=job_id)
            assert existing is not None
            return await self._status(existing, duplicate=True)
        log.info("job queued kind=%s cost=%d", kind, cost, extra={"job_id": job_id})
        self.notify()
        job = await self.db.read(jobs.get, job_id=job_id)
        assert job is not None
        return await self._status(job)

    async def _status(self, job: Job, *, duplicate: bool = False) -> Submitted:
        position = await self.db.read(jobs.queue_position, job_id=job.id)
        text = messages.queued(position) if job.state == JobState.QUEUED else messages.STARTED
        buttons = (Button("Cancel", Action.CANCEL, job.id),) if not JobState(job.state).terminal else ()
        return Submitted(job.id, Reply(text, buttons), duplicate)

    async def attach_status(self, job_id: str, reply_target: dict[str, Any]) -> None:
        """Remember the status message a front end posted, so any process can edit it later."""
        await self.db.write(jobs.set_reply_target, job_id=job_id, reply_target=reply_target, now=self.clock())

    async def rerun(
        self, actor: Actor, event_id: str, action: Action, parent_id: str, reply_target: dict[str, Any]
    ) -> Submitted:
        """Reroll (a new seed) or vary (a nudged seed and id weight) a job of this user."""
        await self._check_open(actor)
        existing = await self.db.read(jobs.get, job_id=event_id)
        if existing is not None:
            return await self._status(existing, duplicate=True)
        user = await self.user(actor)
        parent = await self._own_job(user, parent_id)
        faces = tuple([await self.blobs.get(key) for key in parent.face_keys])
        request = GenerationRequest.from_params(parent.params, faces)
        if action is Action.REROLL:
            request = replace(request, seed=random.randrange(2**31))
        else:
            base_seed = int(parent.seed) if parent.seed and parent.seed.isdigit() else random.randrange(2**31)
            request = replace(
                request, seed=(base_seed + random.randrange(1, 1000)) % 2**31, id_weight=self._nudged(request)
            )
        return await self._submit(
            user,
            event_id,
            request,
            list(parent.face_keys),
            reply_target,
            kind=str(action),
            parent_id=parent.id,
        )

    def _nudged(self, request: GenerationRequest) -> float | None:
        """An id weight a little off the one used, kept inside what the preferred backend allows."""
        candidates = self.router.candidates(request)
        if not candidates:
            return request.id_weight
        limit = candidates[0].capabilities.limits.get("id_weight")
        if not isinstance(limit, Range):
            return request.id_weight
        current = request.id_weight if request.id_weight is not None else float(limit.default or limit.low)
        nudged = current + random.choice((-0.1, 0.1))
        return round(min(limit.high, max(limit.low, nudged)), 2)

    async def _own_job(self, user: User, job_id: str) -> Job:
        job = await self.db.read(jobs.get, job_id=job_id)
        if job is None or job.user_id != user.id:
            raise UserError(messages.NOT_YOUR_JOB)
        if job.expired:
            raise UserError(messages.JOB_EXPIRED)
        return job

    async def cancel(self, actor: Actor, job_id: str | None = None) -> Reply:
        user = await self.user(actor)
        if job_id is None:
            job = await self.db.read(history.latest_unfinished, user_id=user.id or 0)
            if job is None:
                return Reply(messages.NOTHING_TO_CANCEL)
            job_id = job.id
        else:
            await self._own_job(user, job_id)
        outcome = await self.db.write(jobs.cancel, job_id=job_id, now=self.clock())
        return Reply(messages.cancel_outcome(outcome.value))

    # --- identities -------------------------------------------------------------------------------

    async def face_save(self, actor: Actor, name: str, photos: tuple[bytes, ...]) -> Reply:
        name = name.strip().lower()
        if not name or len(name) > 32 or not all(c.isalnum() or c in "-_" for c in name):
            raise UserError(messages.BAD_FACE_NAME)
        if not photos:
            raise UserError(messages.FACE_NEEDS_PHOTOS)
        if len(photos) > MAX_PHOTOS:
            raise UserError(messages.TOO_MANY_PHOTOS.format(limit=MAX_PHOTOS))
        user = await self.user(actor)
        existing = await self.db.read(identities.find, user_id=user.id or 0, name=name)
        if (
            existing is None
            and await self.db.read(identities.count, user_id=user.id or 0) >= self.settings.max_identities
        ):
            raise UserError(messages.face_cap(self.settings.max_identities))
        keys = [await self.blobs.put(await _normalized(photo)) for photo in photos]
        _identity, freed = await self.db.write(
            identities.save, user_id=user.id or 0, name=name, photo_keys=keys, now=self.clock()
        )
        await self._delete_blobs(freed)
        return Reply(messages.face_saved(name, len(keys)))

    async def face_list(self, actor: Actor) -> Reply:
        user = await self.user(actor)
        found = await self.db.read(identities.list_identities, user_id=user.id or 0)
        return Reply(messages.face_list([(i.name, len(i.photo_keys), i.is_default) for i in found]))

    async def face_names(self, actor: Actor) -> list[str]:
        user = await self.user(actor)
        return [i.name for i in await self.db.read(identities.list_identities, user_id=user.id or 0)]

    async def face_use(self, actor: Actor, name: str) -> Reply:
        user = await self.user(actor)
        if not await self.db.write(identities.use, user_id=user.id or 0, name=name.strip().lower()):
            raise UserError(messages.NO_SUCH_FACE.format(name=name))
        return Reply(messages.FACE_DEFAULT.format(name=name.strip().lower()))

    async def face_delete(self, actor: Actor, name: str | None) -> Reply:
        user = await self.user(actor)
        removed, freed = await self.db.write(
            identities.remove, user_id=user.id or 0, name=None if name is None else name.strip().lower()
        )
        await self._delete_blobs(freed)
        if name is not None and not removed:
            raise UserError(messages.NO_SUCH_FACE.format(name=name))
        return Reply(messages.faces_deleted(removed))

    # --- history, quota, forget -------------------------------------------------------------------

    async def history(self, actor: Actor, page: int = 0) -> Reply:
        user = await self.user(actor)
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
        user = await self.user(actor)
        today = jobs.utc_day(self.clock())
        used = user.day_jobs if user.day == today else 0
        limit = user.daily_jobs_limit
        if limit is None:
            scope = await self.db.read(quota.get_scope, scope=quota.GLOBAL_SCOPE)
            limit = (scope or {}).get("daily_jobs") or self.settings.credits.daily_jobs
        return Reply(
            messages.quota_text(
                available=user.credits - user.reserved,
                reserved=user.reserved,
                used_today=used,
                daily_limit=int(limit),
                per_image=self.settings.credits.per_image,
                unlimited=user.unlimited,
            )
        )

    @staticmethod
    def forget(actor: Actor) -> Reply:
        return Reply(
            messages.FORGET_CONFIRM,
            (Button("Delete everything", Action.FORGET, "yes"), Button("Keep", Action.FORGET, "no")),
        )

    async def forget_confirmed(self, actor: Actor, confirmed: bool) -> Reply:
        if not confirmed:
            return Reply(messages.FORGET_KEPT)
        user = await self.user(actor)
        freed = await self.db.write(history.forget, user_id=user.id or 0)
        if freed is None:
            raise UserError(messages.FORGET_BUSY)
        await self._delete_blobs(freed)
        log.info("user %s asked to forget their data; %d blobs deleted", user.id, len(freed))
        return Reply(messages.FORGOTTEN)

    async def _delete_blobs(self, keys: list[str]) -> None:
        for key in keys:
            await self.blobs.delete(key)

    # --- results and progress ---------------------------------------------------------------------

    async def result(self, job: Job) -> Reply:
        """What to deliver for a finished job."""
        if job.state == JobState.SUCCEEDED:
            images = []
            for image in await self.db.read(jobs.images_of, job_id=job.id):
                data = await self.blobs.get(image.blob_key)
                extension = EXTENSIONS.get(image.content_type, "img")
                images.append(
                    ReplyImage(
                        data,
                        image.content_type,
                        image.width,
                        image.height,
                        image.nsfw,
                        f"likeness-{image.index + 1}.{extension}",
                    )
                )
            buttons = (Button("🎲 Reroll", Action.REROLL, job.id), Button("✨ Vary", Action.VARY, job.id))
            return Reply(messages.result_caption(job), buttons, tuple(images))
        if job.state == JobState.CANCELLED:
            return Reply(messages.CANCELLED_REFUNDED)
        return Reply(messages.failure(job.error or "", job.cost))

    @staticmethod
    def progress_text(event: JobProgress) -> str | None:
        if event.kind is ProgressKind.BACKEND:
            return messages.rendering_on(event.backend or "")
        if event.kind is ProgressKind.PROVIDER_QUEUE:
            return messages.provider_queue(event.backend or "", event.position)
        if event.kind is ProgressKind.RENDERING and event.fraction is not None:
            return messages.rendering_fraction(event.backend or "", event.fraction)
        return None


async def _normalized(photo: bytes) -> bytes:
    """Decoding and re-encoding a photo takes milliseconds of CPU: off the event loop."""
    return await asyncio.to_thread(normalize_photo, photo)


def _date(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M")
