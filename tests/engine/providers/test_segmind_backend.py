"""What only the Segmind backend does: one synchronous call answered with image bytes or with JSON."""

from __future__ import annotations

import aiohttp
import pytest
from pydantic import SecretStr

from engine.backend import Stage
from engine.errors import AuthError, BackendError, NoFaceError, TransientError, UnknownOutcomeError
from engine.providers.replicate import ReplicateFluxPulidBackend
from engine.providers.segmind import SegmindFluxPulidBackend
from engine.providers.settings import ReplicateSettings, SegmindSettings
from engine.request import GenerationRequest
from tests.fakes.providers_common import Fault, RecordingProgress, html_page, tiny_image
from tests.fakes.segmind import KEY, FakeSegmind, SegmindAnswer
from tests.virtual_clock import VirtualClock

FACE = tiny_image("jpeg", (32, 32))
PRICE = 0.04


def request(**kw: object) -> GenerationRequest:
    return GenerationRequest(prompt="portrait, neon", faces=(FACE,), **kw)  # type: ignore[arg-type]


@pytest.fixture
def backend(
    http_session: aiohttp.ClientSession, fake_segmind: FakeSegmind, clock: VirtualClock
) -> SegmindFluxPulidBackend:
    settings = SegmindSettings(key=SecretStr(KEY), base_url=fake_segmind.url, usd_per_image=PRICE)
    return SegmindFluxPulidBackend(http_session, settings, clock=clock)


async def test_image_answer(backend: SegmindFluxPulidBackend, fake_segmind: FakeSegmind) -> None:
    progress = RecordingProgress()
    result = await backend.generate(request(), progress)
    (call,) = fake_segmind.requests("generate")
    assert call.headers["x-api-key"] == KEY
    assert "Authorization" not in call.headers
    body = call.json()
    assert body["main_face_image"].startswith("data:image/jpeg;base64,")
    assert (body["width"], body["height"]) == (896, 1152)
    assert body["num_steps"] == 20
    assert body["guidance_scale"] == 4
    assert body["id_weight"] == 1.05
    assert body["output_format"] == "webp"
    assert body["output_quality"] == 80
    assert body["num_outputs"] == 1
    assert "seed" not in body and "negative_prompt" not in body
    assert progress.refs == []  # nothing to resume for a synchronous call
    assert progress.updates == [(Stage.RUNNING, None)]
    (image,) = result.images
    assert image.content_type == "image/webp"
    assert (image.width, image.height) == (14, 18)
    assert result.spend_usd == pytest.approx(PRICE)


async def test_parameters_map_to_wire_format(backend: SegmindFluxPulidBackend, fake_segmind: FakeSegmind) -> None:
    req = request(output_format="jpeg", steps=12, id_weight=2.0, seed=5, negative_prompt="text", true_cfg=3.0)
    assert backend.capabilities.check(backend.name, req) == []
    result = await backend.generate(req, RecordingProgress())
    body = fake_segmind.requests("generate")[0].json()
    assert body["output_format"] == "jpg"
    assert body["num_steps"] == 12
    assert body["id_weight"] == 2.0
    assert body["seed"] == 5
    assert body["negative_prompt"] == "text"
    assert body["true_cfg"] == 3.0
    assert result.images[0].content_type == "image/jpeg"


async def test_replicate_and_segmind_send_the_model_the_same_input(
    backend: SegmindFluxPulidBackend, http_session: aiohttp.ClientSession
) -> None:
    """Both serve ByteDance's flux-pulid: one mapping, apart from the documented id_weight default and the
    number of images Segmind's call returns."""
    replicate = ReplicateFluxPulidBackend(http_session, ReplicateSettings(token=SecretStr("t"), version="a" * 64))
    req = request(width=640, steps=12, seed=3, output_format="png", negative_prompt="text", id_weight=2.0)
    from_replicate = await replicate.arguments(req)
    from_segmind = await backend.arguments(req)
    assert from_replicate == from_segmind
    assert backend.capabilities.default("id_weight") == 1.05 and replicate.capabilities.default("id_weight") == 1
    assert backend.capabilities.limits["num_images"] != replicate.capabilities.limits["num_images"]
    shared = set(backend.capabilities.limits) - {"id_weight", "num_images"}
    assert {name: backend.capabilities.limits[name] for name in shared} == {
        name: replicate.capabilities.limits[name] for name in shared
    }


@pytest.mark.parametrize("answer", [SegmindAnswer.JSON_BASE64, SegmindAnswer.JSON_URL])
async def test_json_answers(backend: SegmindFluxPulidBackend, fake_segmind: FakeSegmind, answer: SegmindAnswer) -> None:
    fake_segmind.answer = answer
    result = await backend.generate(request(output_format="png"), RecordingProgress())
    assert result.images[0].content_type == "image/png"
    assert len(fake_segmind.requests("cdn")) == (1 if answer is SegmindAnswer.JSON_URL else 0)


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (Fault(status=500, json={"error": "Internal server error"}), TransientError),
        (html_page(502), TransientError),
        # Taken and billed, but unreadable: ended as an unknown outcome, sent neither again nor elsewhere.
        (html_page(200), UnknownOutcomeError),
        (Fault(status=200, body=b"", content_type="image/jpeg"), UnknownOutcomeError),
        (Fault(status=200, body=tiny_image("jpeg", (64, 64))[:120], content_type="image/jpeg"), UnknownOutcomeError),
        (Fault(status=200, json={"error": "No face detected in the image"}), NoFaceError),
        (Fault(status=403, json={"error": "Forbidden"}), AuthError),
    ],
    ids=["500", "502-html", "200-html", "empty-image", "truncated-image", "json-error", "403"],
)
async def test_answers_are_classified_and_never_resent(
    backend: SegmindFluxPulidBackend, fake_segmind: FakeSegmind, fault: Fault, error: type[BackendError]
) -> None:
    fake_segmind.fail("generate", fault)
    with pytest.raises(error) as caught:
        await backend.generate(request(), RecordingProgress())
    assert type(caught.value) is error
    assert len(fake_segmind.requests("generate")) == 1
    if fault.body is not None:
        assert "truncated or corrupt" in caught.value.detail or "not a JPEG" in caught.value.detail
