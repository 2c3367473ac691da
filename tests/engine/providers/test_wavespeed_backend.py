"""The WaveSpeed backend against the fake WaveSpeed API."""

from __future__ import annotations

import asyncio
import itertools

import aiohttp
import pytest
from pydantic import SecretStr

from engine.backend import ProviderRef, Stage
from engine.errors import (
    InvalidInputError,
    NoFaceError,
    OutOfCreditError,
    ProviderFailedError,
    TransientError,
    UnknownOutcomeError,
)
from engine.providers.http import PollSchedule, RetryPolicy, Timeouts, Timing
from engine.providers.settings import WaveSpeedSettings
from engine.providers.wavespeed import WaveSpeedFluxPulidBackend
from engine.request import GenerationRequest
from tests.fakes.providers_common import Fault, RecordingProgress, VirtualClock, eventually, tiny_image
from tests.fakes.wavespeed import KEY, FakeWaveSpeed, WaveSpeedOutcome, WaveSpeedScript, envelope

FACE = tiny_image("webp", (32, 32))


def request(**kw: object) -> GenerationRequest:
    return GenerationRequest(prompt="an elf in a forest", faces=(FACE,), **kw)  # type: ignore[arg-type]


@pytest.fixture
def backend(
    http_session: aiohttp.ClientSession, fake_wavespeed: FakeWaveSpeed, timing: Timing, timeouts: Timeouts
) -> WaveSpeedFluxPulidBackend:
    settings = WaveSpeedSettings(key=SecretStr(KEY), base_url=fake_wavespeed.url)
    return WaveSpeedFluxPulidBackend(http_session, settings, timing=timing, timeouts=timeouts)


def gaps(fake: FakeWaveSpeed) -> list[float]:
    """Virtual seconds between the submit and each result poll, in order."""
    times = [r.at for r in fake.log if r.route in ("submit", "result")]
    return [later - earlier for earlier, later in itertools.pairwise(times)]


class WorkerDied(Exception):
    pass


def crash() -> None:
    raise WorkerDied


async def test_round_trip(backend: WaveSpeedFluxPulidBackend, fake_wavespeed: FakeWaveSpeed) -> None:
    polls_when_stored: list[int] = []
    progress = RecordingProgress(on_submitted=lambda: polls_when_stored.append(len(fake_wavespeed.requests("result"))))
    result = await backend.generate(request(), progress)

    (upload,) = fake_wavespeed.requests("upload")
    assert upload.headers["Authorization"] == f"Bearer {KEY}"
    (submit,) = fake_wavespeed.requests("submit")
    assert submit.headers["Authorization"] == f"Bearer {KEY}"
    body = submit.json()
    assert body["image"] in fake_wavespeed.uploads
    assert fake_wavespeed.uploads[body["image"]] == FACE
    assert body["size"] == "1024*1024"
    assert body["guidance_scale"] == 3.5
    assert body["seed"] == -1
    assert body["output_format"] == "jpeg"
    assert body["enable_base64_output"] is False and body["enable_sync_mode"] is False
    assert polls_when_stored == [0]
    assert progress.updates == [(Stage.QUEUED, None), (Stage.RUNNING, None)]
    assert len(fake_wavespeed.requests("result")) == 3
    (image,) = result.images
    assert image.content_type == "image/jpeg" and not image.nsfw
    assert result.spend_usd == pytest.approx(0.02)


async def test_parameters_map_to_wire_format(backend: WaveSpeedFluxPulidBackend, fake_wavespeed: FakeWaveSpeed) -> None:
    req = request(width=768, height=1344, guidance=6.0, seed=99, output_format="png")
    assert backend.capabilities.check(backend.name, req) == []
    result = await backend.generate(req, RecordingProgress())
    body = fake_wavespeed.requests("submit")[0].json()
    assert body["size"] == "768*1344"
    assert body["guidance_scale"] == 6.0
    assert body["seed"] == 99
    assert body["output_format"] == "png"
    assert result.images[0].content_type == "image/png"


def test_capabilities(backend: WaveSpeedFluxPulidBackend) -> None:
    caps = backend.capabilities
    assert caps.check(backend.name, request(width=256, height=1536)) == []
    bad = caps.check(backend.name, request(width=255, height=1537, steps=10, id_weight=1.0, num_images=2))
    assert {p.parameter for p in bad} == {"width", "height", "steps", "id_weight", "num_images"}


async def test_polls_at_least_two_seconds_apart(
    http_session: aiohttp.ClientSession, fake_wavespeed: FakeWaveSpeed, timing: Timing, clock: VirtualClock
) -> None:
    fake_wavespeed.script = WaveSpeedScript(created_ticks=3, processing_ticks=4)
    fake_wavespeed.fail("result", Fault(status=500, json=envelope(None, 500, "internal error")))
    eager = WaveSpeedFluxPulidBackend(
        http_session,
        WaveSpeedSettings(key=SecretStr(KEY), base_url=fake_wavespeed.url),
        timing=timing,
        retry=RetryPolicy(base_delay_s=0.1),
        schedule=PollSchedule(first_s=0.1, max_s=0.5),  # asks for faster polling than allowed
    )
    await eager.generate(request(), RecordingProgress())
    assert len(fake_wavespeed.requests("result")) == 9
    assert all(gap >= 2.0 for gap in gaps(fake_wavespeed)), gaps(fake_wavespeed)
    assert min(clock.sleeps) >= 2.0


@pytest.mark.parametrize(
    ("error", "kind"),
    [("Face not detected in the input image", NoFaceError), ("worker crashed", ProviderFailedError)],
)
async def test_failed_inside_http_200_stops_polling(
    backend: WaveSpeedFluxPulidBackend, fake_wavespeed: FakeWaveSpeed, error: str, kind: type[Exception]
) -> None:
    fake_wavespeed.script = WaveSpeedScript(outcome=WaveSpeedOutcome.FAILED, error=error)
    with pytest.raises(kind) as caught:
        await backend.generate(request(), RecordingProgress())
    assert type(caught.value) is kind
    assert error in str(caught.value)
    assert len(fake_wavespeed.requests("result")) == 3


async def test_envelope_error_code_in_http_200_is_retried(
    backend: WaveSpeedFluxPulidBackend, fake_wavespeed: FakeWaveSpeed
) -> None:
    fake_wavespeed.fail("result", Fault(status=200, json=envelope(None, 500, "internal error")))
    result = await backend.generate(request(), RecordingProgress())
    assert len(result.images) == 1
    assert len(fake_wavespeed.requests("result")) == 4


async def test_nsfw_flag_recorded(backend: WaveSpeedFluxPulidBackend, fake_wavespeed: FakeWaveSpeed) -> None:
    fake_wavespeed.script = WaveSpeedScript(outcome=WaveSpeedOutcome.NSFW)
    result = await backend.generate(request(), RecordingProgress())
    assert result.images[0].nsfw is True


async def test_base64_outputs_decode(backend: WaveSpeedFluxPulidBackend, fake_wavespeed: FakeWaveSpeed) -> None:
    fake_wavespeed.script = WaveSpeedScript(outcome=WaveSpeedOutcome.BASE64)
    result = await backend.generate(request(output_format="webp"), RecordingProgress())
    assert result.images[0].content_type == "image/webp"
    assert fake_wavespeed.requests("cdn") == []


async def test_submit_429_is_transient_and_single(
    backend: WaveSpeedFluxPulidBackend, fake_wavespeed: FakeWaveSpeed
) -> None:
    fake_wavespeed.fail(
        "submit", Fault(status=429, json=envelope(None, 429, "rate limited"), headers={"Retry-After": "31"})
    )
    with pytest.raises(TransientError) as caught:
        await backend.generate(request(), RecordingProgress())
    assert caught.value.retry_after == 31
    assert len(fake_wavespeed.requests("submit")) == 1


async def test_balance_failure_in_envelope_is_out_of_credit(
    backend: WaveSpeedFluxPulidBackend, fake_wavespeed: FakeWaveSpeed
) -> None:
    fake_wavespeed.out_of_credit = True
    with pytest.raises(OutOfCreditError):
        await backend.generate(request(), RecordingProgress())


async def test_invalid_size_is_invalid_input(backend: WaveSpeedFluxPulidBackend, fake_wavespeed: FakeWaveSpeed) -> None:
    with pytest.raises(InvalidInputError) as caught:
        await backend.generate(request(width=2048), RecordingProgress())
    assert "size" in caught.value.detail


async def test_submit_hang_is_unknown_outcome(
    backend: WaveSpeedFluxPulidBackend, fake_wavespeed: FakeWaveSpeed
) -> None:
    fake_wavespeed.fail("submit", Fault(passthrough=True, hang_s=5))
    with pytest.raises(UnknownOutcomeError):
        await backend.generate(request(), RecordingProgress())
    assert len(fake_wavespeed.requests("submit")) == 1
    assert len(fake_wavespeed.tasks) == 1


async def test_resume_uploads_and_submits_nothing(
    backend: WaveSpeedFluxPulidBackend, fake_wavespeed: FakeWaveSpeed
) -> None:
    first = RecordingProgress(on_submitted=crash)
    with pytest.raises(WorkerDied):
        await backend.generate(request(), first)
    ref = ProviderRef.from_json(first.refs[0].to_json())
    await backend.generate(request(), RecordingProgress(resume=ref))
    assert len(fake_wavespeed.requests("submit")) == 1
    assert len(fake_wavespeed.requests("upload")) == 1
    assert {r.path for r in fake_wavespeed.requests("result")} == {f"/api/v3/predictions/{ref.request_id}/result"}


async def test_cancellation_is_reraised(backend: WaveSpeedFluxPulidBackend, fake_wavespeed: FakeWaveSpeed) -> None:
    fake_wavespeed.script = WaveSpeedScript(stuck=True)
    task = asyncio.create_task(backend.generate(request(), RecordingProgress()))
    await eventually(lambda: len(fake_wavespeed.requests("result")) >= 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_concurrency_stays_under_a_semaphore(
    backend: WaveSpeedFluxPulidBackend, fake_wavespeed: FakeWaveSpeed
) -> None:
    fake_wavespeed.max_concurrent = 2
    gate = asyncio.Semaphore(2)

    async def one() -> None:
        async with gate:
            await backend.generate(request(), RecordingProgress())

    await asyncio.gather(*(one() for _ in range(4)))
    assert fake_wavespeed.high_water == 2
    assert len(fake_wavespeed.tasks) == 4
