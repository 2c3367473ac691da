"""Rendering for chat users: imagine, reroll or vary a job, cancel it, and remember its status message."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from bot import messages
from bot.errors import UserError
from bot.intake import MAX_PHOTOS, normalized
from bot.service.actors import Actor
from bot.service.estimates import Estimates
from bot.service.face_check import FaceCheck, FaceEmbeddings, keep_embeddings
from bot.service.options import checked_params, parse_prompt
from bot.service.replies import Action, Button, Reply, ReplyTarget, Submitted
from bot.service.safety import SafetyPolicies, policy_scope
from bot.service.styles import Styles
from bot.service.users import Users
from bot.settings import Settings
from bot.styles import load_styles
from engine.capabilities import Range
from engine.catalogue import LOCAL
from engine.changes import CHANGES_PARAM, STRICT_PARAM, Change, changes, job_changes, size_change
from engine.request import GenerationRequest
from engine.routing import Plan, Refusal, Router
from engine.safety import POLICY_PARAM
from storage import blob_refs, delivery, history, identities, jobs, pending, quota, scopes
from storage.blobs import BlobStore
from storage.db import Database
from storage.errors import DuplicateJob, QuotaRefused
from storage.models import Job, User
from storage.scope_caps import ScopeCapReached
from storage.states import JobState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImagineInput:
    event_id: str  # the chat event's id: the job's idempotency key
    text: str  # the prompt, possibly with --options
    reply_target: ReplyTarget
    photos: tuple[bytes, ...] = ()
    face: str | None = None  # a saved identity by name; None: the photos, else the default identity
    params: dict[str, Any] = field(default_factory=dict)  # options given as structured fields


class Imagine:
    def __init__(
        self,
        *,
        db: Database,
        blobs: BlobStore,
        router: Router,
        users: Users,
        settings: Settings,
        face_check: FaceCheck,
        notify: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db, self.blobs, self.router, self.users = db, blobs, router, users
        self.settings, self.notify, self.clock = settings, notify, clock
        self.face_check = face_check
        self.policies = SafetyPolicies(db, settings.safety)
        self.styles = Styles(load_styles(settings.styles))
        self.estimates = Estimates(db, clock=clock)

    async def submit(self, actor: Actor, given: ImagineInput) -> Submitted:
        """Queue a render of the prompt with the given photos, a saved face or the default one.

        Everything that can refuse the request cheaply (the prompt, the routing, a ban, credits, the daily
        limit, a missing face) does so before any photo is decoded or stored: a refused request costs a
        few reads, and leaves no file behind. New photos then need the user's agreement to the privacy
        notice, and must pass the face checks, before they are stored.
        """
        await self.users.check_open(actor)
        existing = await self.db.read(jobs.get, job_id=given.event_id)
        if existing is not None:  # the platform delivered this event twice
            return await self._status(existing, duplicate=True)
        prompt, params = parse_prompt(given.text)
        params.update(checked_params({k: v for k, v in given.params.items() if v is not None}))
        strict = bool(params.pop("strict", False))
        style = params.pop("style", None)
        if style:
            prompt, params = self.styles.find(str(style)).apply(prompt, params)
        try:
            request = GenerationRequest(prompt=prompt, faces=(), **params)
        except TypeError:
            raise UserError(messages.EMPTY_PROMPT) from None
        if len(given.photos) > MAX_PHOTOS:
            raise UserError(messages.TOO_MANY_PHOTOS.format(limit=MAX_PHOTOS))
        user = await self.users.of(actor)
        saved = None if given.photos else await self._saved_face(user, given.face)
        _fitted, plan, _changes = await self._fit(request, strict=strict)  # _submit fits the request itself
        await self._check_quota(user, request)
        found: FaceEmbeddings = ()
        if saved is None:
            self.face_check.require_consent(user)
            photos = [await normalized(photo) for photo in given.photos]  # all of them, before storing one
            found = await self.face_check.enroll(photos, min_face_px=self._min_face_px(plan))
            face_keys, source = [await self.blobs.put(photo) for photo in photos], None
        else:
            face_keys, source = saved
            photos = [await self.blobs.get(key) for key in face_keys]
        request = request.with_faces(tuple(photos))
        policy = await self.policies.for_job(actor, given.reply_target)
        return await self._submit(
            user,
            given.event_id,
            request,
            face_keys,
            given.reply_target,
            kind="imagine",
            faces=(found, source),
            policy=str(policy),
            strict=strict,
            scope=policy_scope(actor),
        )

    async def rerun(
        self, actor: Actor, event_id: str, action: Action, parent_id: str, reply_target: ReplyTarget
    ) -> Submitted:
        """Reroll or re-run from history (the same request with a new seed), or vary (a nudged seed and id
        weight) a job of this user; charged and refused like any new job."""
        await self.users.check_open(actor)
        existing = await self.db.read(jobs.get, job_id=event_id)
        if existing is not None:
            return await self._status(existing, duplicate=True)
        user = await self.users.of(actor)
        parent = await self._own_job(user, parent_id)
        faces = tuple([await self.blobs.get(key) for key in parent.face_keys])
        request = GenerationRequest.from_params(parent.params, faces)
        if action in (Action.REROLL, Action.RERUN):
            request = replace(request, seed=random.randrange(2**31))
        else:
            base_seed = int(parent.seed) if parent.seed and parent.seed.isdigit() else random.randrange(2**31)
            request = replace(
                request, seed=(base_seed + random.randrange(1, 1000)) % 2**31, id_weight=self._nudged(request)
            )
        policy = await self.policies.for_job(actor, reply_target)
        return await self._submit(
            user,
            event_id,
            request,
            list(parent.face_keys),
            reply_target,
            kind=str(action),
            parent_id=parent.id,
            faces=((), blob_refs.job_owner(parent.id)),
            policy=str(policy),
            strict=bool(parent.params.get(STRICT_PARAM)),
            scope=policy_scope(actor),
        )

    async def confirm(self, actor: Actor, job_id: str, reply_target: ReplyTarget) -> Submitted:
        """The user confirmed a costly job: queue it and reserve its cost, once however often they press."""
        await self.users.check_open(actor)
        user = await self.users.of(actor)
        try:
            queued = await self.db.write(
                pending.confirm,
                job_id=job_id,
                user_id=user.id or 0,
                reply_target=reply_target.to_json(),
                now=self.clock(),
                daily_jobs_default=self.settings.credits.daily_jobs,
            )
        except QuotaRefused as refused:
            raise UserError(messages.refusal(refused)) from None
        except ScopeCapReached as capped:
            raise UserError(messages.scope_cap_reached(capped.cap)) from None
        except DuplicateJob:
            queued = False
        job = await self.db.read(jobs.get, job_id=job_id)
        if job is None or job.user_id != user.id:
            raise UserError(messages.CONFIRM_GONE)
        if not queued:
            return await self._status(job, duplicate=True)
        log.info("job confirmed and queued cost=%d", job.cost, extra={"job_id": job_id})
        self.notify()
        return await self._status(job)

    async def decline(self, actor: Actor, job_id: str) -> Reply:
        """The user turned a costly job down: nothing was reserved, and its photos may go."""
        user = await self.users.of(actor)
        freed = await self.db.write(pending.decline, job_id=job_id, user_id=user.id or 0)
        for key in freed:
            await self.blobs.delete(key)
        existing = await self.db.read(jobs.get, job_id=job_id)
        return Reply(messages.CONFIRM_GONE if existing is not None else messages.DECLINED)

    def _needs_confirmation(self, user: User, request: GenerationRequest, cost: int) -> bool:
        """More than one image, or more credits than the operator's threshold: the user confirms first."""
        if user.unlimited or cost <= 0:
            return False
        above = self.settings.credits.confirm_above
        return request.num_images > 1 or (above is not None and cost > above)

    async def cancel(self, actor: Actor, job_id: str | None = None) -> Reply:
        """Cancel the given job of this user, or their latest unfinished one."""
        user = await self.users.of(actor)
        if job_id is None:
            job = await self.db.read(history.latest_unfinished, user_id=user.id or 0)
            if job is None:
                return Reply(messages.NOTHING_TO_CANCEL)
            job_id = job.id
        else:
            await self._own_job(user, job_id)
        outcome = await self.db.write(jobs.cancel, job_id=job_id, now=self.clock())
        return Reply(messages.cancel_outcome(outcome.value))

    async def attach_status(self, job_id: str, reply_target: ReplyTarget) -> None:
        """Remember the status message a front end posted, so any process can edit it later."""
        await self.db.write(
            delivery.set_reply_target, job_id=job_id, reply_target=reply_target.to_json(), now=self.clock()
        )

    async def _saved_face(self, user: User, name: str | None) -> tuple[list[str], str]:
        """The photo keys of the named saved face, or of the default one, and the owner of its embeddings."""
        identity = await self.db.read(identities.find, user_id=user.id or 0, name=name)
        if identity is None:
            raise UserError(messages.NO_SUCH_FACE.format(name=name) if name else messages.NO_FACE_YET)
        return list(identity.photo_keys), blob_refs.identity_owner(identity.id or 0)

    def _min_face_px(self, plan: Plan) -> int | None:
        """The local engine's own smallest face where it renders first; the judge's setting elsewhere."""
        return self.settings.local.min_face_px if plan.route[:1] == (LOCAL,) else None

    async def _fit(
        self, request: GenerationRequest, *, strict: bool
    ) -> tuple[GenerationRequest, Plan, tuple[Change, ...]]:
        """The request and its route, and what rendering it there changes of what was asked (the status
        says each); with ``strict`` the route keeps only backends that change nothing, or it is refused.

        A size outside the preferred backend's range is scaled into it rather than sent to another model."""
        preferred = await self.router.preferred()
        found: list[Change] = []
        if preferred is not None:
            resized = size_change(request, preferred, self.router.capabilities(preferred))
            if resized is not None and strict:
                raise UserError(messages.strict_refused([resized[1]]))
            if resized is not None:
                request, change = resized
                found.append(change)
        plan = await self._check_route(request)
        if not plan.route:
            return request, plan, tuple(found)

        def made(backend: str) -> tuple[Change, ...]:
            return changes(request, preferred=preferred, chosen=backend, capabilities=self.router.capabilities)

        # Where a fleet plans the route it holds the live backends; else this process's own are checked.
        up = set(plan.route) if self.router.fleet is not None else set(self.router.available())
        capable = [
            name for name in plan.route if name in up and not self.router.capabilities(name).check(name, request)
        ]
        first = made(capable[0]) if capable else ()
        if strict and first:
            exact = tuple(backend for backend in capable if not made(backend))
            if not exact:
                raise UserError(messages.strict_refused(first))
            return request, replace(plan, route=exact), ()
        return request, plan, (*found, *first)

    async def _check_route(self, request: GenerationRequest) -> Plan:
        """The route the job will carry, planned against the backends live workers serve."""
        plan = await self.router.plan(request)
        if not isinstance(plan, Refusal):
            return plan
        if plan.over_budget:
            raise UserError(messages.OVER_BUDGET)
        if plan.problems:
            raise UserError(messages.no_backend(plan.problems))
        log.error("no backend available: %s", "; ".join(plan.unavailable))
        raise UserError(messages.NO_BACKEND_UP)

    async def _check_quota(self, user: User, request: GenerationRequest) -> None:
        """The submit's own quota rules, read ahead of it; the submit still decides, in its transaction."""
        refused = await self.db.read(
            quota.check,
            user_id=user.id or 0,
            cost=self._cost(request),
            now=self.clock(),
            daily_jobs_default=self.settings.credits.daily_jobs,
        )
        if refused is not None:
            raise UserError(messages.refusal(refused))

    def _cost(self, request: GenerationRequest) -> int:
        return self.settings.credits.per_image * request.num_images

    async def _submit(
        self,
        user: User,
        job_id: str,
        request: GenerationRequest,
        face_keys: list[str],
        reply_target: ReplyTarget,
        *,
        kind: str,
        parent_id: str | None = None,
        faces: tuple[FaceEmbeddings, str | None] = ((), None),
        policy: str | None = None,
        strict: bool = False,
        scope: str = scopes.GLOBAL_SCOPE,
    ) -> Submitted:
        """Queue the job (or keep it for its user's confirmation) with its face embeddings: ``faces`` holds
        those just made, or the owner to copy them from."""
        request, plan, changed = await self._fit(request, strict=strict)
        cost = self._cost(request)
        params = request.to_params()
        if strict:
            params[STRICT_PARAM] = True
        if changed:
            params[CHANGES_PARAM] = [change.to_json() for change in changed]
        if policy is not None:
            params[POLICY_PARAM] = policy
        found, source = faces
        new_job = jobs.NewJob(
            id=job_id,
            user_id=user.id or 0,
            params=params,
            cost=cost,
            face_keys=face_keys,
            route=list(plan.route),
            reply_target=reply_target.to_json(),
            kind=kind,
            parent_id=parent_id,
            deadline_s=self.settings.queue.job_deadline_s,
        )
        if self._needs_confirmation(user, request, cost):
            # Nothing is reserved yet: the job is queued and charged only when its user confirms.
            await self.db.write(
                _with_embeddings(pending.put, found, source), job=new_job, now=self.clock(), scope=scope
            )
            text = messages.confirm_cost(cost, user.credits - user.reserved, request.num_images)
            confirm = Button(messages.CONFIRM, Action.CONFIRM, job_id)
            decline = Button(messages.DECLINE, Action.DECLINE, job_id)
            return Submitted(job_id, Reply(text, (confirm, decline)), pending=True)
        try:
            await self.db.write(
                _with_embeddings(pending.submit_capped, found, source),
                job=new_job,
                now=self.clock(),
                daily_jobs_default=self.settings.credits.daily_jobs,
                scope=scope,
            )
        except QuotaRefused as refused:
            raise UserError(messages.refusal(refused)) from None
        except ScopeCapReached as capped:
            raise UserError(messages.scope_cap_reached(capped.cap)) from None
        except DuplicateJob:
            existing = await self.db.read(jobs.get, job_id=job_id)
            assert existing is not None
            return await self._status(existing, duplicate=True)
        log.info("job queued kind=%s cost=%d", kind, cost, extra={"job_id": job_id})
        if plan.waiting:
            log.warning("no live worker serves %s: the job waits for one", ",".join(plan.route) or "any backend")
        self.notify()
        job = await self.db.read(jobs.get, job_id=job_id)
        assert job is not None
        return await self._status(job, waiting=plan.waiting)

    async def _status(self, job: Job, *, duplicate: bool = False, waiting: bool = False) -> Submitted:
        position = await self.db.read(jobs.queue_position, job_id=job.id)
        if job.state != JobState.QUEUED:
            text = messages.STARTED
        elif waiting:
            text = messages.waiting_for_worker(position)
        else:
            text = messages.queued(position, await self.estimates.eta(job.id) if position else None)
        notes = [messages.change_note(change) for change in job_changes(job.params)]
        text = "\n".join([text, *notes])
        buttons = (Button(messages.CANCEL_BUTTON, Action.CANCEL, job.id),) if not JobState(job.state).terminal else ()
        return Submitted(job.id, Reply(text, buttons), duplicate)

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


def _with_embeddings(write: Callable[..., Any], found: FaceEmbeddings, source: str | None) -> Callable[..., Any]:
    """``write`` (a submit) with the new job's face embeddings stored in the same transaction."""

    def both(*, session: Any, job: jobs.NewJob, now: float, **kw: Any) -> Any:
        result = write(session=session, job=job, now=now, **kw)
        keep_embeddings(session, job_id=job.id, found=found, source=source, now=now)
        return result

    return both
