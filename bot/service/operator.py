"""Operator jobs (`likeness generate`): one job through the same ledger, owned by a local user without quota."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bot import messages
from bot.errors import OperatorError
from bot.service.face_check import FaceEmbeddings, keep_embeddings
from bot.service.replies import ReplyImage
from bot.service.results import extension
from engine.request import GenerationRequest
from engine.routing import Router
from storage import delivery, jobs, users
from storage.blobs import BlobStore
from storage.db import Database
from storage.settings import QueueSettings
from storage.states import DeliveryState, JobState, Tier

OPERATOR_PLATFORM = "cli"
OPERATOR_ID = "operator"
WRITTEN = "file"  # the delivery path of an operator job's outputs


@dataclass(frozen=True)
class Finished:
    """How an operator job ended."""

    job_id: str
    state: str
    error: str | None

    @property
    def succeeded(self) -> bool:
        return self.state == JobState.SUCCEEDED


class OperatorJobs:
    def __init__(
        self,
        *,
        db: Database,
        blobs: BlobStore,
        router: Router,
        queue: QueueSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db, self.blobs, self.router, self.queue, self.clock = db, blobs, router, queue, clock

    async def submit(
        self, request: GenerationRequest, *, backend: str | None = None, face_embeddings: FaceEmbeddings = ()
    ) -> str:
        """Queue the request, pinned to ``backend`` when one is named (no failover); returns the job id.

        The request's faces must already be normalised photos (and checked, their ``face_embeddings`` kept
        with the job to score its outputs). Raises OperatorError with one line when no backend can take the
        request.
        """
        if backend is not None and backend not in self.router.backends:
            raise OperatorError(messages.unknown_backend(backend))
        route = [backend] if backend is not None else list(self.router.route)
        refusal = self.router.refusal(request, route)
        if refusal is not None:
            if not refusal.problems:
                raise OperatorError(messages.operator_no_backend(refusal.unavailable))
            raise OperatorError(messages.no_backend(refusal.problems).replace("\n", " "))
        now = self.clock()
        user = await self.db.write(
            users.ensure_user,
            platform=OPERATOR_PLATFORM,
            platform_user_id=OPERATOR_ID,
            now=now,
            welcome_credits=0,
            tier=Tier.OPERATOR,
            unlimited=True,
        )
        face_keys = [await self.blobs.put(face) for face in request.faces]
        job_id = f"cli-{uuid.uuid4().hex[:12]}"

        def submit(*, session: Any, job: jobs.NewJob, now: float, daily_jobs_default: int) -> float:
            queued = jobs.submit(session=session, job=job, now=now, daily_jobs_default=daily_jobs_default)
            keep_embeddings(session, job_id=job.id, found=face_embeddings, source=None, now=now)
            return queued

        await self.db.write(
            submit,
            job=jobs.NewJob(
                id=job_id,
                user_id=user.id or 0,
                params=request.to_params(),
                cost=0,
                face_keys=face_keys,
                route=route,
                pinned=backend is not None,
                reply_target={"platform": OPERATOR_PLATFORM},
                deadline_s=self.queue.job_deadline_s,
            ),
            now=now,
            daily_jobs_default=0,
        )
        return job_id

    async def finished(self, job_id: str) -> Finished | None:
        """How the job ended, or None while it is queued or running."""
        job = await self.db.read(jobs.get, job_id=job_id)
        if job is None:
            raise LookupError(job_id)
        if not JobState(job.state).terminal:
            return None
        return Finished(job.id, str(job.state), job.error)

    async def outputs(self, job_id: str) -> list[ReplyImage]:
        """The job's images, named ``<job id>-<n>.<ext>``."""
        found = []
        for image in await self.db.read(jobs.images_of, job_id=job_id):
            found.append(
                ReplyImage(
                    await self.blobs.get(image.blob_key),
                    image.content_type,
                    image.width,
                    image.height,
                    image.nsfw,
                    f"{job_id}-{image.index + 1}.{extension(image.content_type)}",
                )
            )
        return found

    async def scores(self, job_id: str) -> list[tuple[float | None, str | None]]:
        """Each output's likeness and the judge that scored it, in the order of ``outputs``."""
        return [(image.likeness, image.judge) for image in await self.db.read(jobs.images_of, job_id=job_id)]

    async def written(self, job_id: str) -> None:
        """The outputs are on disk: the job is delivered."""
        await self.db.write(
            delivery.mark_delivery, job_id=job_id, state=DeliveryState.DELIVERED, path=WRITTEN, now=self.clock()
        )
