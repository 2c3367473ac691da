"""After a render: each output's likeness to the job's face, one free re-render of a poor result, and the
safety check of outputs that no provider vouched for."""

from __future__ import annotations

import asyncio
import io
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from PIL import Image

from engine.attempt import Attempt, Renderer
from engine.backend import GenerationResult, OutputImage
from engine.capabilities import Capabilities, Range
from engine.catalogue import LOCAL
from engine.clock import SYSTEM_CLOCK, Clock
from engine.errors import PhotoMissingError, UnsafeOutputError
from engine.events import JobProgress, ProgressHub, ProgressKind
from engine.judge import Embedding, FaceJudge, JudgeSettings, OutputScore, dominant_face, score_output
from engine.metrics import NULL_METRICS, LikenessMetrics
from engine.request import GenerationRequest
from engine.safety import POLICY_PARAM, SafetyClassifier, SafetyPolicy, SafetySettings, SafetyVerdict
from storage import blob_refs, embeddings, jobs
from storage.blobs import BlobStore
from storage.db import Database
from storage.models import Job

log = logging.getLogger(__name__)

ID_WEIGHT_NUDGE = 0.1  # a re-render leans this much further towards the face, where the backend has an id weight
MAX_SEED = 2**31  # a new seed below this fits every backend's documented seed range


@dataclass(frozen=True)
class Scored:
    """One output of one render, with its likeness (None when nothing was scored)."""

    image: OutputImage
    score: OutputScore | None
    round: int  # 1: the job's own render, 2: the first free re-render, ...
    seed: str | None
    backend: str

    @property
    def value(self) -> float:
        return -1.0 if self.score is None else self.score.score


def provider_checked(backend: str, capabilities: Capabilities | None, asked: Any) -> bool:
    """Whether the backend's own safety checker looked at its outputs: never on the local engine; on a
    provider whose checker can be switched off, as the request (or the provider's default) set it; on the
    other providers, always (their checkers drop or flag what they refuse)."""
    if backend == LOCAL or capabilities is None:
        return False
    limit = capabilities.limits.get("safety_checker")
    if limit is None:
        return True
    return bool(asked if asked is not None else limit.default)


def rgb(data: bytes) -> np.ndarray:
    """An encoded image as an RGB uint8 array."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


class Judging:
    """Renders an attempt through the ``Renderer``, then judges what came back.

    Each output is scored against the job's identity: the embeddings stored with the job when this judge
    made them, else those of its face photos. When fewer outputs than asked reach ``min_score`` (or show a
    face at all), the job renders again on the same backend (failing over only as the route allows) with a
    new seed and, where the backend has one, a slightly higher id weight, up to ``retries`` times; the best
    outputs of all renders are delivered, and every render's provider cost is recorded. Then outputs without
    a provider's verdict go through the safety classifier (when one is installed), and the job's policy
    decides about flagged ones: ``block`` fails the job (refunded), ``spoiler`` marks them, ``allow`` keeps
    them as they are. A failure of the judge or the classifier is logged and never fails the job.
    """

    def __init__(
        self,
        db: Database,
        blobs: BlobStore,
        *,
        judge: FaceJudge | None,
        settings: JudgeSettings,
        safety: SafetyClassifier | None,
        safety_settings: SafetySettings,
        hub: ProgressHub,
        metrics: LikenessMetrics = NULL_METRICS,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.db, self.blobs = db, blobs
        self.judge = judge if settings.enabled else None
        self.settings = settings
        self.safety, self.safety_settings = safety, safety_settings
        self.hub, self.metrics, self.clock = hub, metrics, clock

    async def render(self, renderer: Renderer, attempt: Attempt) -> GenerationResult:
        job = attempt.job
        result = await renderer.render(attempt)
        identity = await self._identity(job)
        pool = await self._scored(job, result, identity, 1)
        wanted = len(result.images)
        spend, rounds = result.spend_usd, 1
        while identity is not None and rounds <= self.settings.retries and not self._enough(pool, wanted):
            again = await self._rerender(renderer, attempt, pool)
            if again is None:
                break
            rounds += 1
            spend += again.spend_usd
            pool += await self._scored(job, again, identity, rounds)
        chosen = sorted(pool, key=lambda s: (-s.value, s.round))[:wanted] if rounds > 1 else pool
        if chosen:
            job.backend = chosen[0].backend
        images = await self._checked(renderer, job, chosen, spend)
        return GenerationResult(images=tuple(images), seed=chosen[0].seed if chosen else result.seed, spend_usd=spend)

    # --- likeness ---------------------------------------------------------------------------------

    def _enough(self, pool: Sequence[Scored], wanted: int) -> bool:
        if all(s.score is None for s in pool):  # nothing could be scored: nothing says a re-render helps
            return True
        passing = sum(1 for s in pool if s.score is not None and s.score.passes(self.settings.min_score))
        return passing >= wanted

    async def _identity(self, job: Job) -> tuple[Embedding, ...] | None:
        """The embeddings to score against: stored with the job by this judge, else made from its photos."""
        judge = self.judge
        if judge is None or not job.face_keys:
            return None
        try:
            stored = await self.db.read(embeddings.of_owner, owner=blob_refs.job_owner(job.id))
            mine = tuple(Embedding.from_bytes(e.judge, e.vector) for e in stored if e.judge == judge.name)
            if mine:
                return mine
            photos = await self._faces(job)
            made = await asyncio.to_thread(self._embed_photos, judge, photos)
        except PhotoMissingError:
            return None
        except Exception:
            log.exception("could not read the job's face for its likeness", extra={"job_id": job.id})
            return None
        if not made:
            log.info("no face found in the job's photos: outputs are not scored", extra={"job_id": job.id})
            return None
        return made

    def _embed_photos(self, judge: FaceJudge, photos: Sequence[bytes]) -> tuple[Embedding, ...]:
        made = []
        for data in photos:
            image = rgb(data)
            face, _rivals = dominant_face(judge.detect(image), self.settings.dominant_face_ratio)
            if face is not None:
                made.append(judge.embed(image, face))
        return tuple(made)

    async def _faces(self, job: Job) -> tuple[bytes, ...]:
        faces = []
        for key in job.face_keys:
            try:
                faces.append(await self.blobs.get(key))
            except KeyError:
                raise PhotoMissingError(key) from None
        return tuple(faces)

    async def _scored(
        self, job: Job, result: GenerationResult, identity: tuple[Embedding, ...] | None, round_: int
    ) -> list[Scored]:
        """Score a render's outputs and record it (its backend, seed, cost and scores) in the job's events."""
        backend = job.backend or "none"
        scores: list[OutputScore | None] = [None] * len(result.images)
        judge = self.judge
        if identity is not None and judge is not None:
            try:
                scores = list(await asyncio.to_thread(self._score_all, judge, result.images, identity))
            except Exception:
                log.exception("scoring the outputs failed", extra={"job_id": job.id})
        scored = []
        for image, score in zip(result.images, scores, strict=True):
            if score is not None:
                self.metrics.likeness(backend, score.score)
                image = replace(image, likeness=round(score.score, 4), judge=score.judge)
            scored.append(Scored(image, score, round_, result.seed, backend))
        await self._event(
            job,
            "render",
            round=round_,
            backend=backend,
            seed=result.seed,
            spend_usd=result.spend_usd,
            likeness=[None if s is None else round(s.score, 4) for s in scores],
            judge=None if identity is None or judge is None else judge.name,
        )
        return scored

    @staticmethod
    def _score_all(
        judge: FaceJudge, images: Sequence[OutputImage], identity: tuple[Embedding, ...]
    ) -> list[OutputScore | None]:
        scores: list[OutputScore | None] = []
        for image in images:
            try:
                pixels = rgb(image.data)
            except OSError:  # an output Pillow cannot read is not scored
                scores.append(None)
                continue
            scores.append(score_output(judge, pixels, identity))
        return scores

    async def _rerender(self, renderer: Renderer, attempt: Attempt, pool: Sequence[Scored]) -> GenerationResult | None:
        """One free re-render with a new seed; None when it could not be had (the first result then stands)."""
        job = attempt.job
        backend = job.backend or ""
        if job.deadline_at is not None and self.clock.time() >= job.deadline_at:
            return None
        try:
            request = self._reseeded(
                GenerationRequest.from_params(job.params, await self._faces(job)), renderer, backend
            )
        except PhotoMissingError:
            return None
        best = max(s.value for s in pool)
        log.info(
            "likeness %.2f below %.2f: rendering again on %s, free",
            max(best, 0.0),
            self.settings.min_score,
            backend,
            extra={"job_id": job.id},
        )
        self.metrics.likeness_retry(backend)
        self.hub.publish(JobProgress(job.id, ProgressKind.LIKENESS_RETRY, backend))
        await self._event(
            job,
            "likeness_retry",
            backend=backend,
            likeness=None if best < 0 else round(best, 4),
            min_score=self.settings.min_score,
            seed=request.seed,
            id_weight=request.id_weight,
        )
        # The first render's request is finished: the re-render submits a new one rather than resuming it.
        job.provider_ref = None
        deadline_hit = attempt.deadline_hit
        try:
            return await renderer.render(attempt, request=request, prefer=backend)
        except Exception as exc:
            attempt.deadline_hit = deadline_hit
            job.backend = backend or job.backend
            log.warning("the free re-render failed (%s): the first result stands", exc, extra={"job_id": job.id})
            return None

    @staticmethod
    def _reseeded(request: GenerationRequest, renderer: Renderer, backend: str) -> GenerationRequest:
        found = renderer.router.backends.get(backend)
        limit = None if found is None else found.capabilities.limits.get("id_weight")
        if isinstance(limit, Range):
            current = request.id_weight if request.id_weight is not None else float(limit.default or limit.low)
            request = replace(request, id_weight=round(min(limit.high, current + ID_WEIGHT_NUDGE), 2))
        return replace(request, seed=random.randrange(MAX_SEED))

    # --- safety -----------------------------------------------------------------------------------

    def _policy(self, job: Job) -> SafetyPolicy:
        asked = job.params.get(POLICY_PARAM)
        try:
            return SafetyPolicy(asked) if asked else self.safety_settings.policy
        except ValueError:
            return self.safety_settings.policy

    async def _checked(self, renderer: Renderer, job: Job, chosen: Sequence[Scored], spend: float) -> list[OutputImage]:
        """The outputs to deliver under the job's policy; raises UnsafeOutputError where it blocks them."""
        policy = self._policy(job)
        flagged = [s.image.nsfw for s in chosen]
        unchecked = [
            index
            for index, s in enumerate(chosen)
            if not provider_checked(s.backend, _capabilities(renderer, s.backend), job.params.get("safety_checker"))
        ]
        classifier = self.safety
        if classifier is not None and unchecked:
            try:
                pixels = await asyncio.to_thread(lambda: [rgb(chosen[index].image.data) for index in unchecked])
                verdicts: list[SafetyVerdict] = await asyncio.to_thread(classifier.classify, pixels)
            except Exception:
                log.exception("the safety classifier failed: outputs delivered unchecked", extra={"job_id": job.id})
            else:
                for index, verdict in zip(unchecked, verdicts, strict=True):
                    flagged[index] = flagged[index] or verdict.unsafe
                await self._event(
                    job,
                    "safety",
                    classifier=classifier.name,
                    unsafe=[round(v.unsafe_score, 4) for v in verdicts],
                    policy=str(policy),
                )
        if any(flagged):
            backend = job.backend or "none"
            for _ in range(sum(flagged)):
                self.metrics.unsafe_output(backend, str(policy))
            log.info("%d outputs flagged unsafe; policy %s", sum(flagged), policy, extra={"job_id": job.id})
            if policy is SafetyPolicy.BLOCK:
                raise UnsafeOutputError(f"{sum(flagged)} of {len(chosen)} outputs flagged unsafe", spend_usd=spend)
        spoiler = policy is SafetyPolicy.SPOILER
        return [replace(s.image, nsfw=flag and spoiler) for s, flag in zip(chosen, flagged, strict=True)]

    async def _event(self, job: Job, kind: str, **data: Any) -> None:
        try:
            await self.db.write(jobs.add_event, job_id=job.id, kind=kind, now=self.clock.time(), data=data)
        except Exception:  # the history entry is worth less than the job it describes
            log.exception("could not record the %s event", kind, extra={"job_id": job.id})


def _capabilities(renderer: Renderer, backend: str) -> Capabilities | None:
    found = renderer.router.backends.get(backend)
    return None if found is None else found.capabilities
