"""What only the Replicate backend does: a pinned version, file uploads, terminal states, outputs that expire."""

from __future__ import annotations

import os

import aiohttp
import pytest
from pydantic import SecretStr

from engine.backend import Stage
from engine.errors import (
    AuthError,
    BackendError,
    ContentPolicyError,
    NoFaceError,
    OutputExpiredError,
    ProviderFailedError,
    TransientError,
)
from engine.providers.replicate import ReplicateFluxPulidBackend
from engine.providers.settings import ReplicateSettings
from engine.request import GenerationRequest
from tests.fakes.providers_common import Fault, RecordingProgress, tiny_image
from tests.fakes.replicate import TOKEN, VERSION, FakeReplicate, ReplicateOutcome, ReplicateScript
from tests.virtual_clock import VirtualClock

FACE = tiny_image("png", (32, 32))
RATE = 0.001


def request(**kw: object) -> GenerationRequest:
    return GenerationRequest(prompt="a knight, cinematic", faces=(FACE,), **kw)  # type: ignore[arg-type]


def settings(fake: FakeReplicate, **kw: object) -> ReplicateSettings:
    values: dict[str, object] = {
        "token": SecretStr(TOKEN),
        "base_url": fake.url,
        "version": f"bytedance/flux-pulid:{VERSION}",
        "usd_per_second": RATE,
    }
    values.update(kw)
    return ReplicateSettings.model_validate(values)


@pytest.fixture
def backend(
    http_session: aiohttp.ClientSession, fake_replicate: FakeReplicate, clock: VirtualClock
) -> ReplicateFluxPulidBackend:
    return ReplicateFluxPulidBackend(http_session, settings(fake_replicate), clock=clock)


class WorkerDied(Exception):
    pass


def crash() -> None:
    raise WorkerDied


async def test_wire_format_and_result(backend: ReplicateFluxPulidBackend, fake_replicate: FakeReplicate) -> None:
    progress = RecordingProgress()
    result = await backend.generate(request(), progress)

    (create,) = fake_replicate.requests("create")
    assert create.headers["Authorization"] == f"Bearer {TOKEN}"
    body = create.json()
    assert body["version"] == VERSION  # the bare version id
    values = body["input"]
    assert values["main_face_image"].startswith("data:image/png;base64,")
    assert values["prompt"] == "a knight, cinematic"
    assert (values["width"], values["height"]) == (896, 1152)
    assert values["num_steps"] == 20
    assert values["guidance_scale"] == 4
    assert values["id_weight"] == 1
    assert values["start_step"] == 0
    assert values["true_cfg"] == 1
    assert values["max_sequence_length"] == 128
    assert values["num_outputs"] == 1
    assert values["output_format"] == "webp"
    assert values["output_quality"] == 80
    assert "seed" not in values and "negative_prompt" not in values
    assert progress.refs[0].urls["get"].endswith(f"/v1/predictions/{progress.refs[0].request_id}")
    assert progress.updates == [(Stage.QUEUED, None), (Stage.RUNNING, None)]
    (image,) = result.images
    assert image.content_type == "image/webp"
    assert (image.width, image.height) == (12, 16)
    assert result.spend_usd == pytest.approx(4.5 * RATE)
    assert fake_replicate.requests("model_create") == []


async def test_several_outputs_and_format_mapping(
    backend: ReplicateFluxPulidBackend, fake_replicate: FakeReplicate
) -> None:
    req = request(num_images=3, output_format="jpeg", seed=7, negative_prompt="blurry", id_weight=2.5)
    assert backend.capabilities.check(backend.name, req) == []
    result = await backend.generate(req, RecordingProgress())
    values = fake_replicate.requests("create")[0].json()["input"]
    assert values["output_format"] == "jpg"
    assert values["num_outputs"] == 3
    assert values["seed"] == 7
    assert values["negative_prompt"] == "blurry"
    assert values["id_weight"] == 2.5
    assert [image.content_type for image in result.images] == ["image/jpeg"] * 3
    assert result.seed == "7"


def test_capabilities_follow_the_model_page(backend: ReplicateFluxPulidBackend) -> None:
    caps = backend.capabilities
    assert caps.check(backend.name, request(steps=20, id_weight=3, width=1536, height=256)) == []
    bad = caps.check(backend.name, request(steps=21, id_weight=3.1, width=1537, mode="fidelity"))
    assert {p.parameter for p in bad} == {"steps", "id_weight", "width", "mode"}
    assert caps.default("steps") == 20 and caps.default("id_weight") == 1


async def test_large_face_goes_through_file_upload(
    backend: ReplicateFluxPulidBackend, fake_replicate: FakeReplicate
) -> None:
    big = tiny_image("png", (400, 400)) + os.urandom(300 * 1024)  # PNG readers stop at IEND
    assert len(big) > 256 * 1024
    await backend.generate(GenerationRequest(prompt="x", faces=(big,)), RecordingProgress())
    (upload,) = fake_replicate.requests("files")
    assert upload.headers["Authorization"] == f"Bearer {TOKEN}"
    assert upload.headers["Content-Type"].startswith("multipart/form-data")
    (file_id,) = fake_replicate.files
    assert fake_replicate.files[file_id] == big
    values = fake_replicate.requests("create")[0].json()["input"]
    assert values["main_face_image"].endswith(f"/v1/files/{file_id}")
    assert len(fake_replicate.requests("create")) == 1


async def test_a_lost_upload_answer_is_uploaded_again(
    backend: ReplicateFluxPulidBackend, fake_replicate: FakeReplicate
) -> None:
    big = tiny_image("png", (400, 400)) + os.urandom(300 * 1024)
    fake_replicate.fail("files", Fault(status=503, json={"detail": "busy"}))
    await backend.generate(GenerationRequest(prompt="x", faces=(big,)), RecordingProgress())
    assert len(fake_replicate.requests("files")) == 2
    assert len(fake_replicate.requests("create")) == 1


@pytest.mark.parametrize(
    ("script", "error"),
    [
        (ReplicateScript(outcome=ReplicateOutcome.FAILED), ContentPolicyError),
        (ReplicateScript(outcome=ReplicateOutcome.FAILED, error="No face detected in the image"), NoFaceError),
        (ReplicateScript(outcome=ReplicateOutcome.FAILED, error="CUDA out of memory"), ProviderFailedError),
        (ReplicateScript(outcome=ReplicateOutcome.CANCELED), ProviderFailedError),
        (ReplicateScript(outcome=ReplicateOutcome.ABORTED), ProviderFailedError),
        (ReplicateScript(outcome=ReplicateOutcome.EMPTY), ContentPolicyError),
    ],
    ids=["failed-nsfw", "failed-no-face", "failed-oom", "canceled", "aborted", "succeeded-empty"],
)
async def test_polling_stops_on_every_terminal_state(
    backend: ReplicateFluxPulidBackend,
    fake_replicate: FakeReplicate,
    script: ReplicateScript,
    error: type[BackendError],
) -> None:
    fake_replicate.script = script
    with pytest.raises(error) as caught:
        await backend.generate(request(), RecordingProgress())
    assert type(caught.value) is error
    assert len(fake_replicate.requests("get")) == 3
    assert fake_replicate.requests("cancel") == []


async def test_throttle_hint_becomes_retry_after(
    backend: ReplicateFluxPulidBackend, fake_replicate: FakeReplicate
) -> None:
    throttled = {
        "title": "Request was throttled",
        "detail": "Request was throttled. Your rate limit resets in ~30s.",
    }
    fake_replicate.fail("create", Fault(status=429, json=throttled))
    with pytest.raises(TransientError) as caught:
        await backend.generate(request(), RecordingProgress())
    assert caught.value.retry_after == 30
    assert len(fake_replicate.requests("create")) == 1


async def test_invalid_version_is_an_operator_problem(
    http_session: aiohttp.ClientSession, fake_replicate: FakeReplicate, clock: VirtualClock
) -> None:
    wrong = ReplicateFluxPulidBackend(http_session, settings(fake_replicate, version="ab" * 32), clock=clock)
    with pytest.raises(AuthError):
        await wrong.generate(request(), RecordingProgress())


async def test_without_version_unavailable_and_silent(
    http_session: aiohttp.ClientSession, fake_replicate: FakeReplicate
) -> None:
    unpinned = ReplicateFluxPulidBackend(http_session, settings(fake_replicate, version=None))
    reason = unpinned.unavailable_reason()
    assert reason is not None and "VERSION" in reason
    with pytest.raises(AuthError):
        await unpinned.generate(request(), RecordingProgress())
    assert fake_replicate.log == []


async def test_outputs_gone_after_an_hour(
    backend: ReplicateFluxPulidBackend,
    fake_replicate: FakeReplicate,
    http_session: aiohttp.ClientSession,
    clock: VirtualClock,
) -> None:
    first = RecordingProgress(on_submitted=crash)
    with pytest.raises(WorkerDied):
        await backend.generate(request(), first)
    ref = first.refs[0]
    for _ in range(3):  # the prediction finishes while no worker is watching
        async with http_session.get(ref.urls["get"], headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            assert r.status == 200
    clock.advance(3601)
    with pytest.raises(OutputExpiredError):
        await backend.generate(request(), RecordingProgress(resume=ref))


async def test_data_uri_outputs_decode(backend: ReplicateFluxPulidBackend, fake_replicate: FakeReplicate) -> None:
    fake_replicate.script = ReplicateScript(outcome=ReplicateOutcome.DATA_URI)
    result = await backend.generate(request(num_images=2), RecordingProgress())
    assert [image.content_type for image in result.images] == ["image/webp", "image/webp"]
    assert fake_replicate.requests("cdn") == []
