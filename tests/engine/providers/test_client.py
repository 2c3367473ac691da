"""The shared provider HTTP rules: classification, Retry-After, backoff, transport failures and outputs."""

from __future__ import annotations

import base64
import email.utils
import logging
import time

import aiohttp
import pytest
from pydantic import SecretStr

from engine.errors import (
    AuthError,
    BackendError,
    ContentPolicyError,
    InvalidInputError,
    NoFaceError,
    OutOfCreditError,
    OutputExpiredError,
    ProtocolError,
    ProviderFailedError,
    TransientError,
    UnknownOutcomeError,
)
from engine.providers.fal import FalFluxPulidBackend
from engine.providers.http import (
    PollSchedule,
    Provider,
    ProviderHttp,
    RetryPolicy,
    Timeouts,
    Timing,
    classify_status,
    data_uri,
    output_image,
    retry_after_s,
    sniff_image,
)
from engine.providers.settings import FalSettings
from engine.request import GenerationRequest
from tests.fakes.fal import KEY, FakeFal, FalScript
from tests.fakes.providers_common import FakeProvider, Fault, RecordingProgress, VirtualClock, tiny_image

NO_HEADERS: dict[str, str] = {}


@pytest.mark.parametrize(
    ("provider", "status", "message", "headers", "submit", "kind"),
    [
        (Provider.FAL, 429, "Too many requests", {"Retry-After": "5"}, True, TransientError),
        (Provider.FAL, 403, "User is locked. Reason: Exhausted balance.", NO_HEADERS, True, OutOfCreditError),
        (Provider.FAL, 403, "Forbidden", NO_HEADERS, True, AuthError),
        (Provider.FAL, 401, "No user found", NO_HEADERS, True, AuthError),
        (Provider.FAL, 503, "runner unavailable", {"X-Fal-Retryable": "true"}, True, TransientError),
        (Provider.FAL, 503, "runner failed", {"X-Fal-Retryable": "false"}, False, ProviderFailedError),
        (
            Provider.FAL,
            504,
            "request timeout",
            {"X-Fal-Request-Timeout-Type": "user"},
            False,
            ProviderFailedError,
        ),
        (Provider.FAL, 422, "reference_image_url: image_load_error", NO_HEADERS, False, InvalidInputError),
        (Provider.FAL, 422, "No face detected in the reference image", NO_HEADERS, False, NoFaceError),
        (Provider.REPLICATE, 402, "Payment required", NO_HEADERS, True, OutOfCreditError),
        (Provider.REPLICATE, 422, "Invalid version or not permitted", NO_HEADERS, True, AuthError),
        (Provider.REPLICATE, 404, "Not found", NO_HEADERS, True, AuthError),
        (Provider.REPLICATE, 404, "Not found", NO_HEADERS, False, ProviderFailedError),
        (Provider.SEGMIND, 406, "Not enough credits", NO_HEADERS, True, OutOfCreditError),
        (Provider.SEGMIND, 400, "prompt flagged by the NSFW filter", NO_HEADERS, True, ContentPolicyError),
        (Provider.SEGMIND, 502, "Bad gateway", NO_HEADERS, True, TransientError),
        (Provider.SEGMIND, 504, "Timeout", NO_HEADERS, True, UnknownOutcomeError),
        (Provider.SEGMIND, 504, "Timeout", NO_HEADERS, False, TransientError),
        (Provider.WAVESPEED, 400, "Insufficient balance", NO_HEADERS, True, OutOfCreditError),
        (Provider.WAVESPEED, 408, "timeout", NO_HEADERS, False, TransientError),
        (Provider.WAVESPEED, 500, "internal", NO_HEADERS, False, TransientError),
    ],
)
def test_classification(
    provider: Provider,
    status: int,
    message: str,
    headers: dict[str, str],
    submit: bool,
    kind: type[BackendError],
) -> None:
    error = classify_status(provider, status, message, headers, submit=submit, where="call")
    assert type(error) is kind
    assert str(status) in error.detail


def test_retry_after_forms() -> None:
    assert retry_after_s({"Retry-After": "12"}) == 12
    later = email.utils.formatdate(time.time() + 60, usegmt=True)
    assert 55 <= (retry_after_s({"Retry-After": later}) or 0) <= 61
    assert retry_after_s({}, "Request was throttled. Your rate limit resets in ~30s.") == 30
    assert retry_after_s({"Retry-After": "soon"}) is None
    assert retry_after_s({}) is None


def test_backoff_is_bounded_with_jitter() -> None:
    policy = RetryPolicy(base_delay_s=1, max_delay_s=8, max_retry_after_s=60)
    assert [policy.delay(n, None, 0.0) for n in range(6)] == [0.5, 1, 2, 4, 4, 4]
    assert [policy.delay(n, None, 1.0) for n in range(6)] == [1, 2, 4, 8, 8, 8]
    assert policy.delay(0, 30, 0.5) == 30
    assert policy.delay(0, 900, 0.5) == 60  # a Retry-After is honoured up to a cap
    assert RetryPolicy(min_delay_s=2).delay(0, 0.5, 0.0) == 2
    assert PollSchedule(first_s=1, factor=2, max_s=5, min_s=2).interval(0) == 2
    assert PollSchedule(first_s=1, factor=2, max_s=5).interval(10) == 5


def test_images_sniffed_and_wrapped() -> None:
    for fmt, content_type in (("jpeg", "image/jpeg"), ("png", "image/png"), ("webp", "image/webp")):
        data = tiny_image(fmt, (9, 7))
        assert sniff_image(data) == content_type
        uri = data_uri(data)
        assert uri.startswith(f"data:{content_type};base64,")
        assert base64.b64decode(uri.split(",", 1)[1]) == data
        image = output_image(data, nsfw=True)
        assert (image.width, image.height, image.content_type, image.nsfw) == (9, 7, content_type, True)
    with pytest.raises(InvalidInputError):
        data_uri(b"GIF89a....")
    with pytest.raises(ProtocolError):
        output_image(b"<html>gone</html>")


class Plain(FakeProvider):
    pass


async def test_output_fetch_forms(http_session: aiohttp.ClientSession, timing: Timing) -> None:
    async with Plain() as fake:
        http = ProviderHttp(http_session, Provider.FAL, auth={"Authorization": "Key x"}, secrets=["x"], timing=timing)
        png = tiny_image("png")
        url = fake.publish(png, "image/png")
        assert (await http.fetch_output(url)).data == png
        assert (await http.fetch_output(data_uri(png))).data == png
        assert (await http.fetch_output(base64.b64encode(png).decode())).data == png
        fake.expire_outputs()
        with pytest.raises(OutputExpiredError):
            await http.fetch_output(url)
        with pytest.raises(ProtocolError):
            await http.fetch_output("data:image/png;base64,@@@")


async def test_transport_failures_on_polls_are_retried(
    http_session: aiohttp.ClientSession, fake_fal: FakeFal, timing: Timing, clock: VirtualClock
) -> None:
    backend = FalFluxPulidBackend(
        http_session,
        FalSettings(key=SecretStr(KEY), base_url=fake_fal.url),
        timing=timing,
        timeouts=Timeouts(request_s=0.1),
    )
    fake_fal.fail("status", Fault(drop=True), Fault(hang_s=5))
    fake_fal.fail("result", Fault(status=503, json={"detail": "busy"}))
    result = await backend.generate(GenerationRequest(prompt="p", faces=(tiny_image("jpeg"),)), RecordingProgress())
    assert len(result.images) == 1
    assert len(fake_fal.requests("submit")) == 1
    assert len(fake_fal.requests("result")) == 2


async def test_poll_retries_are_bounded(
    http_session: aiohttp.ClientSession, fake_fal: FakeFal, timing: Timing, clock: VirtualClock
) -> None:
    backend = FalFluxPulidBackend(
        http_session,
        FalSettings(key=SecretStr(KEY), base_url=fake_fal.url),
        timing=timing,
        retry=RetryPolicy(attempts=3, base_delay_s=1, max_delay_s=4),
    )
    fake_fal.fail("status", *[Fault(status=502, text="bad gateway") for _ in range(3)])
    with pytest.raises(TransientError):
        await backend.generate(GenerationRequest(prompt="p", faces=(tiny_image("jpeg"),)), RecordingProgress())
    assert len(fake_fal.requests("status")) == 3
    assert clock.sleeps == [0.75, 1.5]


async def test_spend_from_output_size_without_billing_header(
    http_session: aiohttp.ClientSession, fake_fal: FakeFal, timing: Timing
) -> None:
    fake_fal.script = FalScript(billable_units=False)
    backend = FalFluxPulidBackend(http_session, FalSettings(key=SecretStr(KEY), base_url=fake_fal.url), timing=timing)
    result = await backend.generate(GenerationRequest(prompt="p", faces=(tiny_image("jpeg"),)), RecordingProgress())
    assert result.spend_usd == pytest.approx(16 * 12 / 1_000_000 * 0.0333, abs=1e-6)


async def test_unreachable_provider_is_transient_not_unknown(
    http_session: aiohttp.ClientSession, timing: Timing, caplog: pytest.LogCaptureFixture
) -> None:
    async with Plain() as fake:
        url = fake.url
    caplog.set_level(logging.DEBUG)
    backend = FalFluxPulidBackend(
        http_session, FalSettings(key=SecretStr("secret-fal-key"), base_url=url), timing=timing
    )
    with pytest.raises(TransientError) as caught:
        await backend.generate(GenerationRequest(prompt="p", faces=(tiny_image("jpeg"),)), RecordingProgress())
    assert "could not connect" in caught.value.detail
    assert "secret-fal-key" not in caplog.text and "secret-fal-key" not in str(caught.value)
