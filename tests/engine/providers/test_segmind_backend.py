"""The Segmind backend against the fake Segmind API."""

from __future__ import annotations

import logging

import aiohttp
import pytest
from pydantic import SecretStr

from engine.backend import ProviderRef, Stage
from engine.errors import (
    AuthError,
    BackendError,
    InvalidInputError,
    OutOfCreditError,
    ProtocolError,
    TransientError,
    UnknownOutcomeError,
)
from engine.providers.http import RetryPolicy, Timeouts, Timing
from engine.providers.segmind import SegmindFluxPulidBackend
from engine.providers.settings import SegmindSettings
from engine.request import GenerationRequest
from tests.fakes.providers_common import Fault, RecordingProgress, html_page, tiny_image
from tests.fakes.segmind import KEY, FakeSegmind, SegmindAnswer

FACE = tiny_image("jpeg", (32, 32))
PRICE = 0.04


def request(**kw: object) -> GenerationRequest:
    return GenerationRequest(prompt="portrait, neon", faces=(FACE,), **kw)  # type: ignore[arg-type]


@pytest.fixture
def backend(
    http_session: aiohttp.ClientSession,
    fake_segmind: FakeSegmind,
    timing: Timing,
    retry: RetryPolicy,
    timeouts: Timeouts,
) -> SegmindFluxPulidBackend:
    settings = SegmindSettings(key=SecretStr(KEY), base_url=fake_segmind.url, usd_per_image=PRICE)
    return SegmindFluxPulidBackend(http_session, settings, timing=timing, retry=retry, timeouts=timeouts)


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


@pytest.mark.parametrize("answer", [SegmindAnswer.JSON_BASE64, SegmindAnswer.JSON_URL])
async def test_json_answers(backend: SegmindFluxPulidBackend, fake_segmind: FakeSegmind, answer: SegmindAnswer) -> None:
    fake_segmind.answer = answer
    result = await backend.generate(request(output_format="png"), RecordingProgress())
    assert result.images[0].content_type == "image/png"
    assert len(fake_segmind.requests("cdn")) == (1 if answer is SegmindAnswer.JSON_URL else 0)


async def test_not_enough_credits(backend: SegmindFluxPulidBackend, fake_segmind: FakeSegmind) -> None:
    fake_segmind.credits = 0
    with pytest.raises(OutOfCreditError):
        await backend.generate(request(), RecordingProgress())
    assert len(fake_segmind.requests("generate")) == 1


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (
            Fault(status=429, json={"error": "Rate limit exceeded"}, headers={"Retry-After": "20"}),
            TransientError,
        ),
        (Fault(status=500, json={"error": "Internal server error"}), TransientError),
        (html_page(502), TransientError),
        (Fault(status=504, json={"error": "Request timed out"}), UnknownOutcomeError),
        (html_page(200), ProtocolError),
        (Fault(status=200, body=b"", content_type="image/jpeg"), ProtocolError),
        (
            Fault(status=200, body=tiny_image("jpeg", (64, 64))[:120], content_type="image/jpeg"),
            ProtocolError,
        ),
        (Fault(status=200, text='{"image": ', content_type="application/json"), ProtocolError),
        (Fault(status=200, json={"error": "No face detected in the image"}), BackendError),
        (Fault(status=403, json={"error": "Forbidden"}), AuthError),
    ],
    ids=[
        "429",
        "500",
        "502-html",
        "504",
        "200-html",
        "empty-image",
        "truncated-image",
        "bad-json",
        "json-error",
        "403",
    ],
)
async def test_failures_are_classified_and_never_resent(
    backend: SegmindFluxPulidBackend, fake_segmind: FakeSegmind, fault: Fault, error: type[BackendError]
) -> None:
    fake_segmind.fail("generate", fault)
    with pytest.raises(error) as caught:
        await backend.generate(request(), RecordingProgress())
    assert len(fake_segmind.requests("generate")) == 1
    if fault.status == 429:
        assert caught.value.retry_after == 20
    if "No face" in (fault.json or {}).get("error", ""):
        assert caught.value.kind == "no_face"
    if fault.body is not None:
        assert "truncated or corrupt" in caught.value.detail or "not a JPEG" in caught.value.detail


async def test_hang_is_unknown_outcome(backend: SegmindFluxPulidBackend, fake_segmind: FakeSegmind) -> None:
    fake_segmind.fail("generate", Fault(passthrough=True, hang_s=5))
    with pytest.raises(UnknownOutcomeError):
        await backend.generate(request(), RecordingProgress())
    assert len(fake_segmind.requests("generate")) == 1
    assert fake_segmind.jobs == 1


async def test_resume_is_refused_without_a_call(backend: SegmindFluxPulidBackend, fake_segmind: FakeSegmind) -> None:
    ref = ProviderRef(backend=backend.name, request_id="unknown")
    with pytest.raises(UnknownOutcomeError):
        await backend.generate(request(), RecordingProgress(resume=ref))
    assert fake_segmind.log == []


async def test_validation_error(backend: SegmindFluxPulidBackend, fake_segmind: FakeSegmind) -> None:
    with pytest.raises(InvalidInputError) as caught:
        await backend.generate(request(steps=30), RecordingProgress())
    assert "num_steps" in caught.value.detail


async def test_wrong_key_is_auth_error_and_secret(
    http_session: aiohttp.ClientSession, fake_segmind: FakeSegmind, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "sg-wrong-secret-987"
    backend = SegmindFluxPulidBackend(http_session, SegmindSettings(key=SecretStr(secret), base_url=fake_segmind.url))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(AuthError) as caught:
        await backend.generate(request(), RecordingProgress())
    assert secret not in str(caught.value) and secret not in caplog.text
    assert backend.unavailable_reason() is None
    assert SegmindFluxPulidBackend(http_session, SegmindSettings()).unavailable_reason() is not None
