"""The judging step on real photos: each output scored against the job's face, one free re-render of a poor
result on the same backend, the better output delivered with its score, both renders' spend recorded, and the
safety policy applied to outputs that no provider checked."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from prometheus_client import generate_latest
from sqlalchemy import select
from sqlalchemy.engine import Connection

from engine.backend import Backend, GenerationResult, OutputImage, Progress
from engine.capabilities import Capabilities, Choice, Range
from engine.catalogue import LOCAL
from engine.clock import SystemClock
from engine.dispatch import Dispatcher
from engine.errors import ProviderFailedError
from engine.events import JobProgress, ProgressHub, ProgressKind
from engine.judge import DlibJudge, JudgeSettings, enroll
from engine.judge.enrollment import Enrollment
from engine.judging import Judging, provider_checked
from engine.metrics import Metrics
from engine.request import GenerationRequest
from engine.routing import Router
from engine.safety import POLICY_PARAM, SafetySettings, ViTSafetyClassifier
from engine.settings import DispatchSettings
from storage import blob_refs, embeddings, jobs, users
from storage import tables as t
from storage.blobs import LocalBlobStore
from storage.db import Database
from storage.models import Job
from storage.settings import QueueSettings
from tests.engine.judge import photos
from tests.engine.safety.test_classifier import tiny_vit

CAPABILITIES = Capabilities(
    limits={
        "id_weight": Range(0.0, 1.5, 1.0),
        "seed": Range(0, 2**31 - 1, integer=True),
        "num_images": Range(1, 4, 1, integer=True),
    },
    max_faces=4,
)
SPEND = 0.03


def png(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG")
    return out.getvalue()


def tom_again() -> np.ndarray:
    """Tom Hanks as a render might show him: mirrored, larger, slightly turned."""
    return photos.rotated(photos.scaled(photos.flipped(photos.tom()), 3), 8)


@dataclass
class FaceBackend:
    """Renders the next set of images it was given (the last set again once they run out)."""

    outputs: list[list[np.ndarray]]
    name: str = "faces"
    capabilities: Capabilities = CAPABILITIES
    fail_after: int | None = None  # calls after this many raise a provider failure
    requests: list[GenerationRequest] = field(default_factory=list)

    def unavailable_reason(self) -> str | None:
        return None

    async def generate(self, request: GenerationRequest, progress: Progress) -> GenerationResult:
        self.requests.append(request)
        if self.fail_after is not None and len(self.requests) > self.fail_after:
            raise ProviderFailedError("the provider fell over")
        arrays = self.outputs.pop(0) if len(self.outputs) > 1 else self.outputs[0]
        images = tuple(OutputImage(png(a), "image/png", a.shape[1], a.shape[0]) for a in arrays[: request.num_images])
        return GenerationResult(images, seed=str(request.seed), spend_usd=SPEND)


class Recorder:
    def __init__(self) -> None:
        self.scores: list[tuple[str, float]] = []
        self.retries: list[str] = []
        self.unsafe: list[tuple[str, str]] = []

    def likeness(self, backend: str, score: float) -> None:
        self.scores.append((backend, score))

    def likeness_retry(self, backend: str) -> None:
        self.retries.append(backend)

    def unsafe_output(self, backend: str, policy: str) -> None:
        self.unsafe.append((backend, policy))


@pytest.fixture(scope="module")
def judge() -> DlibJudge:
    return DlibJudge()


@dataclass
class World:
    db: Database
    blobs: LocalBlobStore
    judge: DlibJudge
    tmp: Path
    hub: ProgressHub = field(default_factory=ProgressHub)
    metrics: Recorder = field(default_factory=Recorder)
    progress: list[JobProgress] = field(default_factory=list)

    async def job(
        self,
        job_id: str,
        *,
        face: np.ndarray | None = None,
        route: tuple[str, ...] = ("faces",),
        pinned: bool = False,
        params: dict[str, object] | None = None,
        stored: list[np.ndarray] | None = None,
    ) -> None:
        user = await self.db.write(
            users.ensure_user, platform="telegram", platform_user_id=job_id, now=1.0, welcome_credits=10
        )
        key = await self.blobs.put(png(photos.tom() if face is None else face))
        await self.db.write(
            jobs.submit,
            job=jobs.NewJob(
                id=job_id,
                user_id=user.id or 0,
                params={"prompt": "a portrait", "seed": 7, **(params or {})},
                cost=1,
                face_keys=[key],
                route=list(route),
                pinned=pinned,
            ),
            now=1.0,
            daily_jobs_default=100,
        )
        if stored is not None:
            enrollment = enroll(self.judge, stored, JudgeSettings())
            assert isinstance(enrollment, Enrollment)
            await self.db.write(
                embeddings.store,
                owner=blob_refs.job_owner(job_id),
                embeddings=[(e.judge, e.to_bytes()) for e in enrollment.embeddings],
                now=1.0,
            )

    async def run(
        self,
        backends: list[FaceBackend],
        *,
        settings: JudgeSettings | None = None,
        safety: ViTSafetyClassifier | None = None,
        safety_settings: SafetySettings | None = None,
        judge: bool = True,
    ) -> None:
        by_name: dict[str, Backend] = {b.name: b for b in backends}
        dispatch = DispatchSettings()
        router = Router(by_name, list(by_name), Dispatcher.breakers_for(list(by_name), dispatch))
        judging = Judging(
            self.db,
            self.blobs,
            judge=self.judge if judge else None,
            settings=settings or JudgeSettings(),
            safety=safety,
            safety_settings=safety_settings or SafetySettings(),
            hub=self.hub,
            metrics=self.metrics,
        )
        dispatcher = Dispatcher(
            self.db,
            self.blobs,
            router,
            settings=dispatch,
            queue=QueueSettings(lease_s=600, heartbeat_s=300),
            hub=self.hub,
            worker_id="judging-tests",
            clock=SystemClock(),
        )
        dispatcher.judging = judging
        await dispatcher.drain()

    async def finished(self, job_id: str) -> Job:
        job = await self.db.read(jobs.get, job_id=job_id)
        assert job is not None
        return job

    async def events(self, job_id: str, kind: str) -> list[dict[str, object]]:
        return list(await self.db.read(_events, job_id=job_id, kind=kind))

    async def ledger(self, job_id: str) -> list[tuple[str, int]]:
        return list(await self.db.read(_ledger, job_id=job_id))

    async def delivered(self, job_id: str) -> list[tuple[bytes, float | None, str | None, bool]]:
        found = []
        for image in await self.db.read(jobs.images_of, job_id=job_id):
            found.append((await self.blobs.get(image.blob_key), image.likeness, image.judge, image.nsfw))
        return found


def _events(*, session: Connection, job_id: str, kind: str) -> list[dict[str, object]]:
    e = t.job_events.c
    rows = session.execute(select(e.data).where(e.job_id == job_id, e.kind == kind).order_by(e.id))
    return [dict(data) for (data,) in rows]


def _ledger(*, session: Connection, job_id: str) -> list[tuple[str, int]]:
    rows = session.execute(select(t.ledger.c.kind, t.ledger.c.amount).where(t.ledger.c.job_id == job_id))
    return sorted((str(kind), int(amount)) for kind, amount in rows)


@pytest.fixture
async def world(tmp_path: Path, judge: DlibJudge) -> AsyncIterator[World]:
    db = Database(f"sqlite:///{tmp_path / 'likeness.db'}")
    await db.upgrade()
    found = World(db, LocalBlobStore(tmp_path / "blobs"), judge, tmp_path)
    found.hub.subscribe(found.progress.append)
    try:
        yield found
    finally:
        await db.dispose()


async def test_someone_else_s_face_is_rendered_again_once_free_and_the_better_image_delivered(world: World) -> None:
    backend = FaceBackend([[photos.astronaut()], [tom_again()]])
    await world.job("j1")
    await world.run([backend])

    job = await world.finished("j1")
    assert job.state == "succeeded" and job.backend == "faces"
    assert len(backend.requests) == 2  # exactly one free re-render
    first, again = backend.requests
    assert first.seed == 7 and again.seed != 7
    assert again.id_weight == 1.1  # nudged up from the backend's default of 1.0
    [(data, likeness, judge, nsfw)] = await world.delivered("j1")
    assert data == png(tom_again()) and likeness is not None and likeness > 0.7
    assert judge == "dlib-resnet-v1" and not nsfw
    assert job.seed == str(again.seed)
    # One charge, both renders' provider cost recorded, the re-render in the job's history.
    assert await world.ledger("j1") == [("commit", 1), ("reserve", 1)]
    assert job.spend_usd == pytest.approx(2 * SPEND)
    renders = await world.events("j1", "render")
    assert [r["spend_usd"] for r in renders] == [SPEND, SPEND] and [r["round"] for r in renders] == [1, 2]
    astronaut_score, tom_score = (r["likeness"][0] for r in renders)  # type: ignore[index]
    assert astronaut_score < 0.5 < tom_score
    [retry] = await world.events("j1", "likeness_retry")
    assert retry["likeness"] == astronaut_score and retry["min_score"] == 0.5
    assert [e.kind for e in world.progress].count(ProgressKind.LIKENESS_RETRY) == 1
    assert world.metrics.retries == ["faces"] and len(world.metrics.scores) == 2


async def test_two_poor_results_stop_after_one_re_render_and_deliver_the_better(world: World) -> None:
    group_face = photos.cropped(photos.group(), 0.55, 0.2, 0.8, 0.6)
    backend = FaceBackend([[photos.astronaut()], [group_face]])
    await world.job("j2")
    await world.run([backend])
    assert len(backend.requests) == 2
    scores = [r["likeness"][0] for r in await world.events("j2", "render")]  # type: ignore[index]
    assert all(score < 0.5 for score in scores)
    [(data, likeness, _judge, _nsfw)] = await world.delivered("j2")
    assert likeness == max(scores)
    assert data == png([photos.astronaut(), group_face][scores.index(max(scores))])
    assert (await world.finished("j2")).state == "succeeded"


async def test_a_good_likeness_is_delivered_without_a_re_render(world: World) -> None:
    backend = FaceBackend([[tom_again()]])
    await world.job("j3")
    await world.run([backend])
    assert len(backend.requests) == 1
    [(_data, likeness, _judge, _nsfw)] = await world.delivered("j3")
    assert likeness is not None and likeness > 0.7
    assert await world.events("j3", "likeness_retry") == []


async def test_an_output_without_a_face_is_rendered_again(world: World) -> None:
    backend = FaceBackend([[np.full((256, 256, 3), 200, dtype=np.uint8)], [tom_again()]])
    await world.job("j4")
    await world.run([backend])
    assert len(backend.requests) == 2
    [(_data, likeness, _judge, _nsfw)] = await world.delivered("j4")
    assert likeness is not None and likeness > 0.7
    [first, _second] = await world.events("j4", "render")
    assert first["likeness"] == [0.0]


async def test_retries_zero_turns_the_re_render_off(world: World) -> None:
    backend = FaceBackend([[photos.astronaut()], [tom_again()]])
    await world.job("j5")
    await world.run([backend], settings=JudgeSettings(retries=0))
    assert len(backend.requests) == 1
    [(_data, likeness, _judge, _nsfw)] = await world.delivered("j5")
    assert likeness is not None and likeness < 0.5  # still scored and shown


async def test_a_pinned_backend_re_renders_on_itself_and_others_prefer_theirs(world: World) -> None:
    first = FaceBackend([[photos.astronaut()], [tom_again()]], name="first")
    second = FaceBackend([[tom_again()]], name="second")
    await world.job("j6", route=("second", "first"), pinned=True)
    await world.run([first, second])
    assert (len(first.requests), len(second.requests)) == (0, 1)

    third = FaceBackend([[photos.astronaut()], [tom_again()]], name="third")
    fourth = FaceBackend([[tom_again()]], name="fourth")
    await world.job("j7", route=("third", "fourth"))
    await world.run([third, fourth])
    assert (len(third.requests), len(fourth.requests)) == (2, 0)
    assert (await world.finished("j7")).backend == "third"


async def test_a_failed_re_render_leaves_the_first_result(world: World) -> None:
    backend = FaceBackend([[photos.astronaut()]], fail_after=1)
    await world.job("j8", pinned=True)
    await world.run([backend])
    job = await world.finished("j8")
    assert job.state == "succeeded" and len(backend.requests) == 2
    [(data, _likeness, _judge, _nsfw)] = await world.delivered("j8")
    assert data == png(photos.astronaut())
    assert job.spend_usd == pytest.approx(SPEND)


async def test_every_image_of_a_multi_image_job_is_scored_and_the_best_kept(world: World) -> None:
    backend = FaceBackend([[tom_again(), photos.astronaut()], [photos.flipped(tom_again()), photos.astronaut()]])
    await world.job("j9", params={"num_images": 2})
    await world.run([backend])
    assert len(backend.requests) == 2
    delivered = await world.delivered("j9")
    assert len(delivered) == 2
    assert {data for data, *_ in delivered} == {png(tom_again()), png(photos.flipped(tom_again()))}
    assert all(likeness is not None and likeness > 0.7 for _data, likeness, _judge, _nsfw in delivered)
    assert [len(r["likeness"]) for r in await world.events("j9", "render")] == [2, 2]  # type: ignore[arg-type]


async def test_stored_embeddings_of_this_judge_are_what_outputs_are_scored_against(world: World) -> None:
    # The job's photo is Tom, but the embeddings stored at enrollment are the astronaut's: they win.
    backend = FaceBackend([[photos.astronaut()]])
    await world.job("j10", stored=[photos.astronaut()])
    await world.run([backend])
    assert len(backend.requests) == 1
    [(_data, likeness, _judge, _nsfw)] = await world.delivered("j10")
    assert likeness == pytest.approx(1.0, abs=0.01)


async def test_no_face_in_the_job_photo_or_no_judge_scores_nothing(world: World) -> None:
    backend = FaceBackend([[photos.astronaut()], [tom_again()]])
    await world.job("j11", face=np.full((300, 300, 3), 128, dtype=np.uint8))
    await world.run([backend])
    await world.job("j12")
    await world.run([backend], judge=False)
    await world.job("j13")
    await world.run([backend], settings=JudgeSettings(enabled=False))
    assert len(backend.requests) == 3
    for job_id in ("j11", "j12", "j13"):
        [(_data, likeness, judge, _nsfw)] = await world.delivered(job_id)
        assert (likeness, judge) == (None, None)
        assert await world.events(job_id, "likeness_retry") == []


def test_which_outputs_a_provider_checked() -> None:
    switchable = Capabilities(limits={"safety_checker": Choice((True, False), True)})
    assert not provider_checked(LOCAL, CAPABILITIES, None)
    assert provider_checked("fal-flux-pulid", switchable, None)
    assert not provider_checked("fal-flux-pulid", switchable, False)
    assert provider_checked("replicate", CAPABILITIES, None)  # no switch: its checker always runs


@pytest.mark.parametrize(
    ("policy", "unsafe", "outcome"),
    [
        ("block", True, "blocked"),
        ("spoiler", True, "spoilered"),
        ("allow", True, "as is"),
        ("block", False, "as is"),
    ],
)
async def test_the_safety_policy_decides_about_flagged_local_outputs(
    world: World, policy: str, unsafe: bool, outcome: str
) -> None:
    classifier = ViTSafetyClassifier(tiny_vit(world.tmp / "vit", head_bias=(0.0, 3.0) if unsafe else (3.0, 0.0)))
    local = FaceBackend([[tom_again()]], name=LOCAL)
    await world.job("j14", route=(LOCAL,), params={POLICY_PARAM: policy})
    await world.run([local], safety=classifier)
    job = await world.finished("j14")
    [check] = await world.events("j14", "safety")
    assert check["classifier"] == "vit:vit" and check["policy"] == policy
    if outcome == "blocked":
        assert (job.state, job.error) == ("failed", "unsafe_output")
        assert await world.ledger("j14") == [("refund", 1), ("reserve", 1)]
        assert job.spend_usd == pytest.approx(SPEND)  # the render was paid for all the same
        assert world.metrics.unsafe == [(LOCAL, "block")]
        return
    assert job.state == "succeeded"
    [(_data, _likeness, _judge, nsfw)] = await world.delivered("j14")
    assert nsfw is (outcome == "spoilered")


async def test_outputs_a_provider_checked_skip_the_classifier_and_the_default_policy_applies(world: World) -> None:
    classifier = ViTSafetyClassifier(tiny_vit(world.tmp / "vit", head_bias=(0.0, 3.0)))
    provider = FaceBackend([[tom_again()]])
    await world.job("j15")
    await world.run([provider], safety=classifier)
    assert (await world.finished("j15")).state == "succeeded"
    assert await world.events("j15", "safety") == []

    local = FaceBackend([[tom_again()]], name=LOCAL)
    await world.job("j16", route=(LOCAL,))
    await world.run([local], safety=classifier, safety_settings=SafetySettings(policy="spoiler"))
    [(_data, _likeness, _judge, nsfw)] = await world.delivered("j16")
    assert nsfw


def test_prometheus_shows_likeness_re_renders_and_flagged_outputs_per_backend() -> None:
    metrics = Metrics()
    metrics.likeness("fal-flux-pulid", 0.86)
    metrics.likeness("fal-flux-pulid", 0.3)
    metrics.likeness_retry("fal-flux-pulid")
    metrics.unsafe_output(LOCAL, "block")
    text = generate_latest(metrics.registry).decode()
    assert 'likeness_output_likeness_bucket{backend="fal-flux-pulid",le="0.4"} 1.0' in text
    assert 'likeness_output_likeness_bucket{backend="fal-flux-pulid",le="0.9"} 2.0' in text
    assert 'likeness_output_likeness_count{backend="fal-flux-pulid"} 2.0' in text
    assert 'likeness_likeness_retries_total{backend="fal-flux-pulid"} 1.0' in text
    assert f'likeness_unsafe_outputs_total{{backend="{LOCAL}",policy="block"}} 1.0' in text
