"""What only the fal.ai backends do: their wire arguments, SDXL's several photos, NSFW flags, billed units."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from pydantic import SecretStr

from engine.backend import Stage
from engine.errors import InvalidInputError, OutputExpiredError, ProtocolError, ProviderFailedError
from engine.providers.client import RetryPolicy, Timeouts
from engine.providers.fal import FalFluxPulidBackend, FalPulidBackend
from engine.providers.settings import FalSettings
from engine.request import GenerationRequest
from tests.fakes.fal import KEY, FakeFal, FalOutcome, FalScript
from tests.fakes.providers_common import Fault, RecordingProgress, eventually, malformed_json, tiny_image
from tests.virtual_clock import VirtualClock

FACE = tiny_image("jpeg", (32, 32))
TIMEOUTS = Timeouts(request_s=0.5, submit_s=0.3, connect_s=0.3, download_s=0.5, cancel_s=0.5)


def request(**kw: object) -> GenerationRequest:
    return GenerationRequest(prompt="a portrait in the rain", faces=(FACE,), **kw)  # type: ignore[arg-type]


def settings(fake: FakeFal) -> FalSettings:
    return FalSettings(key=SecretStr(KEY), base_url=fake.url)


@pytest.fixture
def flux(http_session: aiohttp.ClientSession, fake_fal: FakeFal, clock: VirtualClock) -> FalFluxPulidBackend:
    retry = RetryPolicy(attempts=4, base_delay_s=0.5, max_delay_s=8.0)
    return FalFluxPulidBackend(http_session, settings(fake_fal), clock=clock, retry=retry, timeouts=TIMEOUTS)


@pytest.fixture
def pulid(http_session: aiohttp.ClientSession, fake_fal: FakeFal, clock: VirtualClock) -> FalPulidBackend:
    return FalPulidBackend(http_session, settings(fake_fal), clock=clock, timeouts=TIMEOUTS)


async def test_flux_pulid_wire_format_and_result(
    flux: FalFluxPulidBackend, fake_fal: FakeFal, clock: VirtualClock
) -> None:
    progress = RecordingProgress()
    result = await flux.generate(request(), progress)

    (submit,) = fake_fal.requests("submit")
    assert submit.path == "/fal-ai/flux-pulid"
    assert submit.headers["Authorization"] == f"Key {KEY}"
    body = submit.json()
    assert body["reference_image_url"].startswith("data:image/jpeg;base64,")
    # Defaults come from fal's documentation when the request leaves them unset.
    assert body["num_inference_steps"] == 20
    assert body["guidance_scale"] == 4
    assert body["id_weight"] == 1
    assert body["true_cfg"] == 1
    assert body["start_step"] == 0
    assert body["max_sequence_length"] == "128"
    assert body["enable_safety_checker"] is True
    assert body["image_size"] == {"width": 1024, "height": 768}
    assert "seed" not in body
    job = fake_fal.jobs[progress.refs[0].request_id]
    assert progress.refs[0].urls["status"].endswith(f"/requests/{job.id}/status")
    assert progress.updates == [(Stage.QUEUED, 1), (Stage.QUEUED, 0), (Stage.RUNNING, None)]
    assert fake_fal.premature_results == 0
    assert len(fake_fal.requests("result")) == 1
    # Outputs were fetched without our key.
    (download,) = fake_fal.requests("cdn")
    assert "Authorization" not in download.headers
    (image,) = result.images
    assert image.content_type == "image/jpeg"
    assert (image.width, image.height) == (16, 12)
    assert image.nsfw is False
    assert result.seed == str(2**64 - 1)
    assert result.spend_usd == pytest.approx(0.786432 * 0.0333, rel=1e-3)
    assert clock.sleeps and all(s > 0 for s in clock.sleeps)


async def test_flux_pulid_maps_explicit_parameters(flux: FalFluxPulidBackend, fake_fal: FakeFal) -> None:
    req = request(
        width=512, height=640, steps=8, guidance=3.5, id_weight=0.7, start_step=2, true_cfg=2.0, seed=42,
        negative_prompt="blurry", max_sequence_length=256, safety_checker=False,
    )  # fmt: skip
    assert flux.capabilities.check(flux.name, req) == []
    await flux.generate(req, RecordingProgress())
    body = fake_fal.requests("submit")[0].json()
    assert body["image_size"] == {"width": 512, "height": 640}
    assert body["num_inference_steps"] == 8
    assert body["guidance_scale"] == 3.5
    assert body["id_weight"] == 0.7
    assert body["start_step"] == 2
    assert body["true_cfg"] == 2.0
    assert body["seed"] == 42
    assert body["negative_prompt"] == "blurry"
    assert body["max_sequence_length"] == "256"
    assert body["enable_safety_checker"] is False


def test_capabilities_follow_fal_documentation(flux: FalFluxPulidBackend, pulid: FalPulidBackend) -> None:
    assert flux.capabilities.check(flux.name, request(steps=50, id_weight=1.0)) == []
    problems = flux.capabilities.check(flux.name, request(steps=51, id_weight=1.5, output_format="png"))
    assert {p.parameter for p in problems} == {"steps", "id_weight", "output_format"}
    assert flux.capabilities.check(flux.name, request(num_images=2))[0].parameter == "num_images"
    assert pulid.capabilities.max_faces == 4
    assert pulid.capabilities.default("mode") == "fidelity"
    assert pulid.capabilities.check(pulid.name, request(mode="extreme style", num_images=4)) == []
    assert pulid.capabilities.check(pulid.name, request(mode="cartoon"))[0].parameter == "mode"


async def test_pulid_sends_every_photo(pulid: FalPulidBackend, fake_fal: FakeFal) -> None:
    faces = (FACE, tiny_image("png", (24, 24)), tiny_image("webp", (20, 20)))
    req = GenerationRequest(prompt="oil painting", faces=faces, num_images=2, id_weight=1.5, mode="extreme style")
    result = await pulid.generate(req, RecordingProgress())
    (submit,) = fake_fal.requests("submit")
    assert submit.path == "/fal-ai/pulid"
    body = submit.json()
    kinds = [ref["image_url"].split(";")[0] for ref in body["reference_images"]]
    assert kinds == ["data:image/jpeg", "data:image/png", "data:image/webp"]
    assert body["id_scale"] == 1.5
    assert body["mode"] == "extreme style"
    assert body["num_images"] == 2
    assert body["guidance_scale"] == 1.2
    assert body["num_inference_steps"] == 4
    assert body["id_mix"] is False
    assert len(result.images) == 2
    assert not any(image.nsfw for image in result.images)  # the model reports no NSFW field
    assert result.spend_usd == pytest.approx(0.768 * 1.024 * 2 * 0.0333, rel=1e-3)


async def test_model_error_after_completion_stops_polling(flux: FalFluxPulidBackend, fake_fal: FakeFal) -> None:
    fake_fal.script = FalScript(outcome=FalOutcome.ERROR)
    with pytest.raises(InvalidInputError) as caught:
        await flux.generate(request(), RecordingProgress())
    assert "load the reference image" in caught.value.detail
    assert len(fake_fal.requests("status")) == 4  # polling stopped at COMPLETED
    assert fake_fal.premature_results == 0


async def test_nsfw_flag_is_recorded(flux: FalFluxPulidBackend, fake_fal: FakeFal) -> None:
    fake_fal.script = FalScript(outcome=FalOutcome.NSFW)
    result = await flux.generate(request(), RecordingProgress())
    assert result.images[0].nsfw is True


async def test_data_uri_outputs_decode(flux: FalFluxPulidBackend, fake_fal: FakeFal) -> None:
    fake_fal.script = FalScript(outcome=FalOutcome.DATA_URI)
    result = await flux.generate(request(), RecordingProgress())
    assert result.images[0].content_type == "image/jpeg"
    assert fake_fal.requests("cdn") == []


async def test_expired_output_is_not_retried(flux: FalFluxPulidBackend, fake_fal: FakeFal) -> None:
    fake_fal.script = FalScript(output_ttl_s=0)
    with pytest.raises(OutputExpiredError):
        await flux.generate(request(), RecordingProgress())
    assert len(fake_fal.requests("cdn")) == 1


async def test_malformed_status_backoff_grows(
    flux: FalFluxPulidBackend, fake_fal: FakeFal, clock: VirtualClock
) -> None:
    fake_fal.fail("status", *[malformed_json() for _ in range(4)])
    with pytest.raises(ProtocolError):
        await flux.generate(request(), RecordingProgress())
    # Backoff grows between retries: 0.5, 1, 2 seconds scaled by the fixed jitter.
    assert clock.sleeps[-3:] == [0.375, 0.75, 1.5]


async def test_a_runner_fal_marks_not_retryable_fails_at_once(flux: FalFluxPulidBackend, fake_fal: FakeFal) -> None:
    fake_fal.fail("status", Fault(status=503, json={"detail": "runner failed"}, headers={"X-Fal-Retryable": "false"}))
    with pytest.raises(ProviderFailedError):
        await flux.generate(request(), RecordingProgress())
    assert len(fake_fal.requests("status")) == 1


async def test_spend_from_output_size_without_billing_header(flux: FalFluxPulidBackend, fake_fal: FakeFal) -> None:
    fake_fal.script = FalScript(billable_units=False)
    result = await flux.generate(request(), RecordingProgress())
    assert result.spend_usd == pytest.approx(16 * 12 / 1_000_000 * 0.0333, abs=1e-6)


async def test_cancel_is_bounded_when_fal_does_not_answer(flux: FalFluxPulidBackend, fake_fal: FakeFal) -> None:
    fake_fal.script = FalScript(outcome=FalOutcome.STUCK)
    fake_fal.fail("cancel", Fault(status=202, json={"status": "CANCELLATION_REQUESTED"}, hang_s=30))
    task = asyncio.create_task(flux.generate(request(), RecordingProgress()))
    await eventually(lambda: len(fake_fal.requests("status")) >= 1)
    task.cancel()
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert loop.time() - started < 2.0  # cancel_s is 0.5 here
    assert len(fake_fal.requests("cancel")) == 1
