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
from engine.providers.client import ProviderHttp, RetryPolicy, Timeouts
from engine.providers.failures import retry_after_s
from engine.providers.fal import FAL, FalFluxPulidBackend
from engine.providers.images import data_uri, output_image, sniff_image
from engine.providers.remote import PollSchedule, Vendor
from engine.providers.replicate import REPLICATE
from engine.providers.segmind import SEGMIND
from engine.providers.settings import FalSettings
from engine.providers.wavespeed import WAVESPEED
from engine.request import GenerationRequest
from tests.fakes.fal import KEY, FakeFal
from tests.fakes.providers_common import FakeProvider, Fault, RecordingProgress, tiny_image
from tests.virtual_clock import VirtualClock

NO_HEADERS: dict[str, str] = {}


@pytest.mark.parametrize(
    ("vendor", "status", "message", "headers", "submit", "kind"),
    [
        (FAL, 429, "Too many requests", {"Retry-After": "5"}, True, TransientError),
        (FAL, 403, "User is locked. Reason: Exhausted balance.", NO_HEADERS, True, OutOfCreditError),
        (FAL, 403, "Forbidden", NO_HEADERS, True, AuthError),
        (FAL, 401, "No user found", NO_HEADERS, True, AuthError),
        (FAL, 503, "runner unavailable", {"X-Fal-Retryable": "true"}, True, TransientError),
        (FAL, 503, "runner failed", {"X-Fal-Retryable": "false"}, False, ProviderFailedError),
        (FAL, 504, "request timeout", {"X-Fal-Request-Timeout-Type": "user"}, False, ProviderFailedError),
        (FAL, 422, "reference_image_url: image_load_error", NO_HEADERS, False, InvalidInputError),
        (FAL, 422, "No face detected in the reference image", NO_HEADERS, False, NoFaceError),
        (REPLICATE, 402, "Payment required", NO_HEADERS, True, OutOfCreditError),
        (REPLICATE, 422, "Invalid version or not permitted", NO_HEADERS, True, AuthError),
        (REPLICATE, 404, "Not found", NO_HEADERS, True, AuthError),
        (REPLICATE, 404, "Not found", NO_HEADERS, False, ProviderFailedError),
        (SEGMIND, 406, "Not enough credits", NO_HEADERS, True, OutOfCreditError),
        (SEGMIND, 400, "prompt flagged by the NSFW filter", NO_HEADERS, True, ContentPolicyError),
        (SEGMIND, 502, "Bad gateway", NO_HEADERS, True, TransientError),
        (SEGMIND, 504, "Timeout", NO_HEADERS, True, UnknownOutcomeError),
        (SEGMIND, 504, "Timeout", NO_HEADERS, False, TransientError),
        (WAVESPEED, 400, "Insufficient balance", NO_HEADERS, True, OutOfCreditError),
        (WAVESPEED, 408, "timeout", NO_HEADERS, False, TransientError),
        (WAVESPEED, 500, "internal", NO_HEADERS, False, TransientError),
        # A vendor's own rule stays with that vendor.
        (WAVESPEED, 402, "Payment required", NO_HEADERS, True, InvalidInputError),
        (SEGMIND, 503, "busy", {"X-Fal-Retryable": "false"}, False, TransientError),
    ],
)
async def test_classification(
    http_session: aiohttp.ClientSession,
    vendor: Vendor,
    status: int,
    message: str,
    headers: dict[str, str],
    submit: bool,
    kind: type[BackendError],
) -> None:
    http = ProviderHttp(
        http_session, vendor.label, base_url="https://api.example", auth={}, secrets=[], rules=vendor.rules
    )
    error = http.failure(status, message, headers, submit=submit, where="call")
    assert type(error) is kind
    assert error.detail.startswith(f"{vendor.label} call: HTTP {status}")


async def test_secrets_are_redacted_from_provider_text(http_session: aiohttp.ClientSession) -> None:
    http = ProviderHttp(
        http_session, "fal", base_url="https://queue.fal.run", auth={"Authorization": "Key s3cret"}, secrets=["s3cret"]
    )
    error = http.failure(400, "bad key s3cret given", NO_HEADERS, submit=True, where="submit")
    assert "s3cret" not in error.detail and "[redacted]" in error.detail


def test_retry_after_forms() -> None:
    assert retry_after_s({"Retry-After": "12"}) == 12
    later = email.utils.formatdate(time.time() + 60, usegmt=True)
    assert 55 <= (retry_after_s({"Retry-After": later}) or 0) <= 61
    assert retry_after_s({}, "Request was throttled. Your rate limit resets in ~30s.") == 30
    assert retry_after_s({"Retry-After": "soon"}) is None
    assert retry_after_s({}) is None


def test_backoff_is_bounded_with_jitter() -> None:
    policy = RetryPolicy(base_delay_s=1, max_delay_s=8, max_retry_after_s=60)
    assert [policy.delay(n, None, 0.0) for n in range(1, 7)] == [0.5, 1, 2, 4, 4, 4]
    assert [policy.delay(n, None, 1.0) for n in range(1, 7)] == [1, 2, 4, 8, 8, 8]
    assert policy.delay(1, 30, 0.5) == 30
    assert policy.delay(1, 900, 0.5) == 60  # a Retry-After is honoured up to a cap
    assert policy.delay(4, 0.1, 1.0) == 8  # and is a lower bound, never a shortcut
    assert RetryPolicy(min_delay_s=2).delay(1, 0.5, 0.0) == 2
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


async def test_output_fetch_forms(http_session: aiohttp.ClientSession, clock: VirtualClock) -> None:
    async with Plain() as fake:
        http = ProviderHttp(
            http_session, "fal", base_url=fake.url, auth={"Authorization": "Key x"}, secrets=["x"], clock=clock
        )
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


def fal_backend(
    session: aiohttp.ClientSession, fake: FakeFal, clock: VirtualClock, **kw: object
) -> FalFluxPulidBackend:
    settings = FalSettings(key=SecretStr(KEY), base_url=fake.url)
    return FalFluxPulidBackend(session, settings, clock=clock, **kw)  # type: ignore[arg-type]


def face_request() -> GenerationRequest:
    return GenerationRequest(prompt="p", faces=(tiny_image("jpeg"),))


async def test_transport_failures_on_polls_are_retried(
    http_session: aiohttp.ClientSession, fake_fal: FakeFal, clock: VirtualClock
) -> None:
    backend = fal_backend(http_session, fake_fal, clock, timeouts=Timeouts(request_s=0.1))
    fake_fal.fail("status", Fault(drop=True), Fault(hang_s=5))
    fake_fal.fail("result", Fault(status=503, json={"detail": "busy"}))
    result = await backend.generate(face_request(), RecordingProgress())
    assert len(result.images) == 1
    assert len(fake_fal.requests("submit")) == 1
    assert len(fake_fal.requests("result")) == 2


async def test_poll_retries_are_bounded_with_growing_backoff(
    http_session: aiohttp.ClientSession, fake_fal: FakeFal, clock: VirtualClock
) -> None:
    backend = fal_backend(http_session, fake_fal, clock, retry=RetryPolicy(attempts=3, base_delay_s=1, max_delay_s=4))
    fake_fal.fail("status", *[Fault(status=502, text="bad gateway") for _ in range(3)])
    with pytest.raises(TransientError):
        await backend.generate(face_request(), RecordingProgress())
    assert len(fake_fal.requests("status")) == 3
    assert clock.sleeps == [0.75, 1.5]


async def test_unreachable_provider_is_transient_not_unknown(
    http_session: aiohttp.ClientSession, clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with Plain() as fake:
        url = fake.url
    caplog.set_level(logging.DEBUG)
    settings = FalSettings(key=SecretStr("secret-fal-key"), base_url=url)
    backend = FalFluxPulidBackend(http_session, settings, clock=clock)
    with pytest.raises(TransientError) as caught:
        await backend.generate(face_request(), RecordingProgress())
    assert "could not connect" in caught.value.detail
    assert "secret-fal-key" not in caplog.text and "secret-fal-key" not in str(caught.value)
