"""The fal.ai queue backends against the fake fal server."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest
from pydantic import SecretStr

from engine.backend import ProviderRef, Stage
from engine.errors import (
    AuthError,
    InvalidInputError,
    OutOfCreditError,
    OutputExpiredError,
    ProtocolError,
    TransientError,
    UnknownOutcomeError,
)
from engine.providers.fal import FalFluxPulidBackend, FalPulidBackend
from engine.providers.http import PollSchedule, RetryPolicy, Timeouts, Timing, WaitExceededError
from engine.providers.settings import FalSettings
from engine.request import GenerationRequest
from tests.fakes.fal import KEY, FakeFal, FalOutcome, FalScript
from tests.fakes.providers_common import (
    Fault,
    RecordingProgress,
    VirtualClock,
    eventually,
    html_page,
    malformed_json,
    tiny_image,
)

FACE = tiny_image("jpeg", (32, 32))


def request(**kw: object) -> GenerationRequest:
    return GenerationRequest(prompt="a portrait in the rain", faces=(FACE,), **kw)  # type: ignore[arg-type]


@pytest.fixture
def flux(
    http_session: aiohttp.ClientSession,
    fake_fal: FakeFal,
    timing: Timing,
    retry: RetryPolicy,
    timeouts: Timeouts,
) -> FalFluxPulidBackend:
    settings = FalSettings(key=SecretStr(KEY), base_url=fake_fal.url)
    return FalFluxPulidBackend(http_session, settings, timing=timing, retry=retry, timeouts=timeouts)


@pytest.fixture
def pulid(
    http_session: aiohttp.ClientSession,
    fake_fal: FakeFal,
    timing: Timing,
    retry: RetryPolicy,
    timeouts: Timeouts,
) -> FalPulidBackend:
    settings = FalSettings(key=SecretStr(KEY), base_url=fake_fal.url)
    return FalPulidBackend(http_session, settings, timing=timing, retry=retry, timeouts=timeouts)


async def test_flux_pulid_round_trip(flux: FalFluxPulidBackend, fake_fal: FakeFal, clock: VirtualClock) -> None:
    polls_when_stored: list[int] = []
    progress = RecordingProgress(on_submitted=lambda: polls_when_stored.append(len(fake_fal.requests("status"))))

    result = await flux.generate(request(), progress)

    submits = fake_fal.requests("submit")
    assert len(submits) == 1
    assert submits[0].path == "/fal-ai/flux-pulid"
    assert submits[0].headers["Authorization"] == f"Key {KEY}"
    body = submits[0].json()
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
    # The request id was stored before the first status poll.
    assert polls_when_stored == [0]
    assert progress.refs[0].backend == "fal-flux-pulid"
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
    assert image.data[:3] == b"\xff\xd8\xff"
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
    body = fake_fal.requests("submit")[0].json()
    assert fake_fal.requests("submit")[0].path == "/fal-ai/pulid"
    kinds = [ref["image_url"].split(";")[0] for ref in body["reference_images"]]
    assert kinds == ["data:image/jpeg", "data:image/png", "data:image/webp"]
    assert body["id_scale"] == 1.5
    assert body["mode"] == "extreme style"
    assert body["num_images"] == 2
    assert body["guidance_scale"] == 1.2
    assert body["num_inference_steps"] == 4
    assert len(result.images) == 2
    assert not any(image.nsfw for image in result.images)  # the model reports no NSFW field
    assert result.spend_usd == pytest.approx(0.768 * 1.024 * 2 * 0.0333, rel=1e-3)


async def test_submit_429_surfaces_retry_after_without_resending(flux: FalFluxPulidBackend, fake_fal: FakeFal) -> None:
    fake_fal.fail("submit", Fault(status=429, json={"detail": "Too many requests"}, headers={"Retry-After": "7"}))
    progress = RecordingProgress()
    with pytest.raises(TransientError) as caught:
        await flux.generate(request(), progress)
    assert caught.value.retry_after == 7
    assert len(fake_fal.requests("submit")) == 1
    assert progress.refs == []
    assert fake_fal.requests("status") == []


async def test_submit_429_without_retry_after(flux: FalFluxPulidBackend, fake_fal: FakeFal) -> None:
    fake_fal.fail("submit", Fault(status=429, json={"detail": "Too many requests"}))
    with pytest.raises(TransientError) as caught:
        await flux.generate(request(), RecordingProgress())
    assert caught.value.retry_after is None


async def test_submit_503_is_transient_then_next_attempt_succeeds(flux: FalFluxPulidBackend, fake_fal: FakeFal) -> None:
    fake_fal.fail(
        "submit",
        Fault(status=503, json={"detail": "runner unavailable"}, headers={"X-Fal-Retryable": "true"}),
    )
    with pytest.raises(TransientError):
        await flux.generate(request(), RecordingProgress())
    result = await flux.generate(request(), RecordingProgress())  # the dispatcher's next attempt
    assert len(result.images) == 1
    assert len(fake_fal.requests("submit")) == 2  # one POST per attempt


async def test_submit_hang_is_unknown_outcome_and_never_resent(flux: FalFluxPulidBackend, fake_fal: FakeFal) -> None:
    fake_fal.fail("submit", Fault(passthrough=True, hang_s=5))
    progress = RecordingProgress()
    with pytest.raises(UnknownOutcomeError) as caught:
        await flux.generate(request(), progress)
    assert "billed" in caught.value.detail
    assert len(fake_fal.requests("submit")) == 1
    assert len(fake_fal.jobs) == 1  # the provider did take the job
    assert progress.refs == []


async def test_submit_reset_after_sending_is_unknown_outcome(flux: FalFluxPulidBackend, fake_fal: FakeFal) -> None:
    fake_fal.fail("submit", Fault(passthrough=True, drop=True))
    with pytest.raises(UnknownOutcomeError):
        await flux.generate(request(), RecordingProgress())
    assert len(fake_fal.requests("submit")) == 1


async def test_locked_account_is_out_of_credit(flux: FalFluxPulidBackend, fake_fal: FakeFal) -> None:
    fake_fal.locked = True
    with pytest.raises(OutOfCreditError):
        await flux.generate(request(), RecordingProgress())
    assert len(fake_fal.requests("submit")) == 1


async def test_wrong_key_is_auth_error_and_key_stays_secret(
    http_session: aiohttp.ClientSession, fake_fal: FakeFal, timing: Timing, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "wrong-secret-key-123"
    backend = FalFluxPulidBackend(
        http_session, FalSettings(key=SecretStr(secret), base_url=fake_fal.url), timing=timing
    )
    caplog.set_level(logging.DEBUG)
    with pytest.raises(AuthError) as caught:
        await backend.generate(request(), RecordingProgress())
    assert fake_fal.requests("submit")[0].headers["Authorization"] == f"Key {secret}"
    assert secret not in str(caught.value)
    assert secret not in repr(caught.value)
    assert secret not in caplog.text


async def test_key_never_logged_on_success(flux: FalFluxPulidBackend, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    await flux.generate(request(), RecordingProgress())
    assert caplog.records  # something was logged
    assert KEY not in caplog.text


async def test_model_error_after_completion(flux: FalFluxPulidBackend, fake_fal: FakeFal) -> None:
    fake_fal.script = FalScript(outcome=FalOutcome.ERROR)
    with pytest.raises(InvalidInputError) as caught:
        await flux.generate(request(), RecordingProgress())
    assert "load the reference image" in caught.value.detail
    statuses = fake_fal.requests("status")
    assert len(statuses) == 4  # polling stopped at COMPLETED
    assert fake_fal.premature_results == 0


async def test_validation_error_from_provider(flux: FalFluxPulidBackend, fake_fal: FakeFal) -> None:
    with pytest.raises(InvalidInputError) as caught:
        await flux.generate(request(id_weight=2.0), RecordingProgress())
    assert "id_weight" in caught.value.detail
    assert fake_fal.jobs == {}


async def test_nsfw_flag_is_recorded(flux: FalFluxPulidBackend, fake_fal: FakeFal) -> None:
    fake_fal.script = FalScript(outcome=FalOutcome.NSFW)
    result = await flux.generate(request(), RecordingProgress())
    assert result.images[0].nsfw is True


async def test_data_uri_outputs_decode(flux: FalFluxPulidBackend, fake_fal: FakeFal) -> None:
    fake_fal.script = FalScript(outcome=FalOutcome.DATA_URI)
    result = await flux.generate(request(), RecordingProgress())
    assert result.images[0].content_type == "image/jpeg"
    assert fake_fal.requests("cdn") == []


async def test_expired_output(flux: FalFluxPulidBackend, fake_fal: FakeFal) -> None:
    fake_fal.script = FalScript(output_ttl_s=0)
    with pytest.raises(OutputExpiredError):
        await flux.generate(request(), RecordingProgress())
    assert len(fake_fal.requests("cdn")) == 1  # an expired output is not retried


async def test_malformed_status_is_retried(flux: FalFluxPulidBackend, fake_fal: FakeFal, clock: VirtualClock) -> None:
    fake_fal.fail("status", malformed_json(), html_page(502))
    result = await flux.generate(request(), RecordingProgress())
    assert len(result.images) == 1
    assert len(fake_fal.requests("status")) == 6


async def test_malformed_status_past_budget_is_protocol_error(
    flux: FalFluxPulidBackend, fake_fal: FakeFal, clock: VirtualClock
) -> None:
    fake_fal.fail("status", *[malformed_json() for _ in range(4)])
    with pytest.raises(ProtocolError):
        await flux.generate(request(), RecordingProgress())
    assert len(fake_fal.requests("status")) == 4  # the retry budget, then stop
    # Backoff grows between retries: 0.5, 1, 2 seconds scaled by the fixed jitter.
    assert clock.sleeps[-3:] == [0.375, 0.75, 1.5]


async def test_poll_failures_honour_retry_after(
    flux: FalFluxPulidBackend, fake_fal: FakeFal, clock: VirtualClock
) -> None:
    fake_fal.fail("status", Fault(status=429, json={"detail": "slow down"}, headers={"Retry-After": "3"}))
    await flux.generate(request(), RecordingProgress())
    assert 3.0 in clock.sleeps


async def test_cancel_reaches_fal(flux: FalFluxPulidBackend, fake_fal: FakeFal) -> None:
    fake_fal.script = FalScript(outcome=FalOutcome.STUCK)
    progress = RecordingProgress()
    task = asyncio.create_task(flux.generate(request(), progress))
    await eventually(lambda: len(fake_fal.requests("status")) >= 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (cancel,) = fake_fal.requests("cancel")
    assert cancel.method == "PUT"
    assert cancel.path == f"/fal-ai/flux-pulid/requests/{progress.refs[0].request_id}/cancel"
    assert cancel.headers["Authorization"] == f"Key {KEY}"
    assert fake_fal.jobs[progress.refs[0].request_id].cancelled


async def test_stuck_queue_gives_up_and_cancels(
    http_session: aiohttp.ClientSession, fake_fal: FakeFal, timing: Timing
) -> None:
    fake_fal.script = FalScript(outcome=FalOutcome.STUCK)
    schedule = PollSchedule(first_s=1, factor=2, max_s=10, max_wait_s=60)
    backend = FalFluxPulidBackend(
        http_session, FalSettings(key=SecretStr(KEY), base_url=fake_fal.url), timing=timing, schedule=schedule
    )
    with pytest.raises(WaitExceededError):
        await backend.generate(request(), RecordingProgress())
    assert len(fake_fal.requests("status")) <= 10
    assert len(fake_fal.requests("cancel")) == 1


class WorkerDied(Exception):
    pass


def crash() -> None:
    raise WorkerDied


async def test_resume_polls_the_stored_request(flux: FalFluxPulidBackend, fake_fal: FakeFal) -> None:
    first = RecordingProgress(on_submitted=crash)  # the worker dies right after storing the ref
    with pytest.raises(WorkerDied):
        await flux.generate(request(), first)
    assert fake_fal.requests("cancel") == []

    ref = ProviderRef.from_json(first.refs[0].to_json())  # as stored and read back
    resumed = RecordingProgress(resume=ref)
    result = await flux.generate(request(), resumed)
    assert len(fake_fal.requests("submit")) == 1
    assert resumed.refs == []
    assert {r.path for r in fake_fal.requests("status")} == {f"/fal-ai/flux-pulid/requests/{ref.request_id}/status"}
    assert len(result.images) == 1


async def test_unavailable_without_key(http_session: aiohttp.ClientSession) -> None:
    backend = FalPulidBackend(http_session, FalSettings())
    assert backend.unavailable_reason() is not None
    with pytest.raises(AuthError):
        await backend.generate(request(), RecordingProgress())


async def test_high_water_mark_under_a_semaphore(flux: FalFluxPulidBackend, fake_fal: FakeFal) -> None:
    gate = asyncio.Semaphore(2)

    async def one() -> None:
        async with gate:
            await flux.generate(request(), RecordingProgress())

    await asyncio.gather(*(one() for _ in range(5)))
    assert len(fake_fal.jobs) == 5
    assert fake_fal.high_water == 2
    assert fake_fal.in_flight == 0


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
    assert loop.time() - started < 2.0  # cancel_s is 0.5 in these tests
    assert len(fake_fal.requests("cancel")) == 1
