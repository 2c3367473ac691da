"""What only the WaveSpeed backend does: the photo by upload, the envelope, at least two seconds between polls."""

from __future__ import annotations

import asyncio
import itertools

import aiohttp
import pytest
from pydantic import SecretStr

from engine.backend import Stage
from engine.errors import NoFaceError, OutOfCreditError, ProviderFailedError
from engine.providers.client import RetryPolicy
from engine.providers.remote import PollSchedule
from engine.providers.settings import WaveSpeedSettings
from engine.providers.wavespeed import WaveSpeedFluxPulidBackend
from engine.request import GenerationRequest
from tests.fakes.providers_common import Fault, RecordingProgress, tiny_image
from tests.fakes.wavespeed import KEY, FakeWaveSpeed, WaveSpeedOutcome, WaveSpeedScript, envelope
from tests.virtual_clock import VirtualClock

FACE = tiny_image("webp", (32, 32))


def request(**kw: object) -> GenerationRequest:
    return GenerationRequest(prompt="an elf in a forest", faces=(FACE,), **kw)  # type: ignore[arg-type]


def settings(fake: FakeWaveSpeed) -> WaveSpeedSettings:
    return WaveSpeedSettings(key=SecretStr(KEY), base_url=fake.url)


@pytest.fixture
def backend(
    http_session: aiohttp.ClientSession, fake_wavespeed: FakeWaveSpeed, clock: VirtualClock
) -> WaveSpeedFluxPulidBackend:
    return WaveSpeedFluxPulidBackend(http_session, settings(fake_wavespeed), clock=clock)


def gaps(fake: FakeWaveSpeed) -> list[float]:
    """Virtual seconds between the submit and each result poll, in order."""
    times = [r.at for r in fake.log if r.route in ("submit", "result")]
    return [later - earlier for earlier, later in itertools.pairwise(times)]


async def test_wire_format_and_result(backend: WaveSpeedFluxPulidBackend, fake_wavespeed: FakeWaveSpeed) -> None:
    progress = RecordingProgress()
    result = await backend.generate(request(), progress)

    (upload,) = fake_wavespeed.requests("upload")
    assert upload.headers["Authorization"] == f"Bearer {KEY}"
    (submit,) = fake_wavespeed.requests("submit")
    assert submit.headers["Authorization"] == f"Bearer {KEY}"
    body = submit.json()
    assert fake_wavespeed.uploads[body["image"]] == FACE
    assert body["size"] == "1024*1024"
    assert body["guidance_scale"] == 3.5
    assert body["seed"] == -1
    assert body["output_format"] == "jpeg"
    assert body["enable_base64_output"] is False and body["enable_sync_mode"] is False
    assert progress.updates == [(Stage.QUEUED, None), (Stage.RUNNING, None)]
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
    http_session: aiohttp.ClientSession, fake_wavespeed: FakeWaveSpeed, clock: VirtualClock
) -> None:
    fake_wavespeed.script = WaveSpeedScript(created_ticks=3, processing_ticks=4)
    fake_wavespeed.fail("result", Fault(status=500, json=envelope(None, 500, "internal error")))
    eager = WaveSpeedFluxPulidBackend(
        http_session,
        settings(fake_wavespeed),
        clock=clock,
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


async def test_balance_failure_inside_http_200_is_out_of_credit(
    backend: WaveSpeedFluxPulidBackend, fake_wavespeed: FakeWaveSpeed
) -> None:
    fake_wavespeed.out_of_credit = True  # the fake answers HTTP 200 with code 400 in the envelope
    with pytest.raises(OutOfCreditError):
        await backend.generate(request(), RecordingProgress())
    assert len(fake_wavespeed.requests("submit")) == 1


async def test_nsfw_flag_recorded(backend: WaveSpeedFluxPulidBackend, fake_wavespeed: FakeWaveSpeed) -> None:
    fake_wavespeed.script = WaveSpeedScript(outcome=WaveSpeedOutcome.NSFW)
    result = await backend.generate(request(), RecordingProgress())
    assert result.images[0].nsfw is True


async def test_base64_outputs_decode(backend: WaveSpeedFluxPulidBackend, fake_wavespeed: FakeWaveSpeed) -> None:
    fake_wavespeed.script = WaveSpeedScript(outcome=WaveSpeedOutcome.BASE64)
    result = await backend.generate(request(output_format="webp"), RecordingProgress())
    assert result.images[0].content_type == "image/webp"
    assert fake_wavespeed.requests("cdn") == []


async def test_the_account_concurrency_cap_is_kept_under_a_semaphore(
    backend: WaveSpeedFluxPulidBackend, fake_wavespeed: FakeWaveSpeed
) -> None:
    fake_wavespeed.max_concurrent = 2  # the fake refuses a third task with 429
    gate = asyncio.Semaphore(2)

    async def one() -> None:
        async with gate:
            await backend.generate(request(), RecordingProgress())

    await asyncio.gather(*(one() for _ in range(4)))
    assert fake_wavespeed.high_water == 2
    assert fake_wavespeed.accepted == 4
