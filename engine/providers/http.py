"""HTTP for the provider backends: classifying failures, retrying safe calls, polling and fetching outputs."""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import logging
import random
import re
import time
import warnings
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any, TypeVar

import aiohttp
from PIL import Image

from engine.backend import OutputImage
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

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_OUTPUT_BYTES = 50 * 1024 * 1024
MAX_OUTPUT_PIXELS = 40_000_000
_DETAIL_CHARS = 300


class Provider(StrEnum):
    FAL = "fal"
    REPLICATE = "replicate"
    WAVESPEED = "wavespeed"
    SEGMIND = "segmind"


# ---------------------------------------------------------------------------------------------------------
# Time, retries and polling


async def _real_sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


@dataclass(frozen=True)
class Timing:
    """Where the backends get time from; tests inject a virtual clock so nothing really waits."""

    sleep: Callable[[float], Awaitable[None]] = _real_sleep
    clock: Callable[[], float] = time.monotonic
    jitter: Callable[[], float] = random.random


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff with jitter for idempotent calls (polls, result fetches, downloads)."""

    attempts: int = 5
    base_delay_s: float = 0.5
    max_delay_s: float = 15.0
    min_delay_s: float = 0.0  # some providers ask for a minimum gap between calls
    max_retry_after_s: float = 120.0  # a Retry-After beyond this is not waited for in-line

    def delay(self, attempt: int, retry_after: float | None, jitter: float) -> float:
        if retry_after is not None:
            return max(self.min_delay_s, min(retry_after, self.max_retry_after_s))
        backoff = min(self.max_delay_s, self.base_delay_s * 2.0**attempt)
        # Half fixed, half random: spreads retries from many jobs without ever retrying at once.
        return max(self.min_delay_s, backoff * (0.5 + jitter / 2))


@dataclass(frozen=True)
class PollSchedule:
    """Gaps between status polls: ``first_s`` growing by ``factor`` up to ``max_s``, never below ``min_s``."""

    first_s: float = 1.0
    factor: float = 1.0
    max_s: float = 5.0
    min_s: float = 0.0
    max_wait_s: float = 900.0  # give up (and cancel at the provider) after this long

    def interval(self, poll: int) -> float:
        return max(self.min_s, min(self.max_s, self.first_s * self.factor**poll))


@dataclass(frozen=True)
class Timeouts:
    request_s: float = 30.0
    submit_s: float = 120.0  # synchronous providers answer the submit with the image itself
    connect_s: float = 10.0
    download_s: float = 120.0
    cancel_s: float = 5.0


class WaitExceededError(ProviderFailedError):
    """The provider did not finish within the backend's polling budget."""


async def poll_until(
    step: Callable[[], Awaitable[T | None]],
    *,
    schedule: PollSchedule,
    timing: Timing,
    what: str,
    wait_first: bool = False,
) -> T:
    """Call ``step`` until it returns a value, sleeping between calls; bounded by ``schedule.max_wait_s``."""
    started = timing.clock()
    polls = 0
    if wait_first:
        await timing.sleep(schedule.interval(0))
    while True:
        result = await step()
        if result is not None:
            return result
        if timing.clock() - started >= schedule.max_wait_s:
            raise WaitExceededError(f"{what}: no result after {schedule.max_wait_s:.0f} s")
        polls += 1
        await timing.sleep(schedule.interval(polls))


# ---------------------------------------------------------------------------------------------------------
# Replies and their classification


@dataclass(frozen=True)
class Reply:
    """A fully read HTTP answer."""

    status: int
    headers: Mapping[str, str]
    body: bytes = field(repr=False)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise MalformedReplyError(f"answer is not JSON ({type(exc).__name__})") from None


class MalformedReplyError(ProtocolError):
    """An answer that could not be parsed; retried on idempotent calls before becoming a ProtocolError."""


_CREDIT_WORDS = re.compile(
    r"insufficient (balance|credit|fund)|not enough credit|exhausted balance|user is locked|"
    r"balance is not enough|out of credit",
    re.IGNORECASE,
)
_CONTENT_WORDS = re.compile(r"nsfw|content polic|safety|inappropriate|sensitive content", re.IGNORECASE)
_FACE_WORDS = re.compile(r"no face|face not (found|detected)|could not (find|detect) (a |any )?face", re.IGNORECASE)
_RESETS_IN = re.compile(r"resets in ~?\s*(\d+(?:\.\d+)?)\s*s", re.IGNORECASE)


def redact(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return text


def provider_message(payload: Any) -> str:
    """The human part of a provider's error body, whatever its shape."""
    if isinstance(payload, str):
        return payload
    if isinstance(payload, list):
        return "; ".join(provider_message(item) for item in payload[:5])
    if isinstance(payload, dict):
        for key in ("detail", "error", "message", "msg", "title"):
            value = payload.get(key)
            if value:
                text = provider_message(value)
                loc = payload.get("loc")
                if key == "msg" and isinstance(loc, list):
                    text = f"{'.'.join(str(part) for part in loc)}: {text}"
                return text
    return ""


def _body_message(reply: Reply) -> str:
    try:
        payload = json.loads(reply.body)
    except (ValueError, UnicodeDecodeError):
        payload = None
    if payload is not None:
        message = provider_message(payload)
        if message:
            return message
    if reply.content_type.startswith("text/html"):
        return "HTML page"
    return reply.body[:_DETAIL_CHARS].decode("utf-8", "replace")


def retry_after_s(headers: Mapping[str, str], message: str = "", *, now: float | None = None) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or HTTP date), or a provider's "resets in ~Ns" hint."""
    value = headers.get("Retry-After")
    if value:
        value = value.strip()
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            when = None
        if when is not None:
            return max(0.0, when.timestamp() - (time.time() if now is None else now))
    hint = _RESETS_IN.search(message)
    if hint:
        return float(hint.group(1))
    return None


def classify_status(
    provider: Provider,
    status: int,
    message: str,
    headers: Mapping[str, str],
    *,
    submit: bool,
    where: str,
) -> BackendError:
    """Map a provider's non-success answer to the engine's failure kinds."""
    text = f"{provider} {where}: HTTP {status}" + (f": {message}" if message else "")
    retry_after = retry_after_s(headers, message)
    if status == 429:
        return TransientError(text, retry_after=retry_after)
    if (
        (provider is Provider.FAL and status == 403 and "locked" in message.lower())
        or (provider is Provider.REPLICATE and status == 402)
        or (provider is Provider.SEGMIND and status == 406)
        or (400 <= status < 500 and _CREDIT_WORDS.search(message))
    ):
        return OutOfCreditError(text)
    if status in (401, 403):
        return AuthError(text)
    if status == 404:
        return AuthError(text) if submit else ProviderFailedError(text)
    if status == 408:
        return TransientError(text, retry_after=retry_after)
    if provider is Provider.REPLICATE and status == 422 and "version" in message.lower():
        return AuthError(text)
    if 400 <= status < 500:
        return job_failure(message, text, invalid=True)
    if status >= 500:
        if provider is Provider.FAL and headers.get("X-Fal-Retryable", "").lower() == "false":
            return ProviderFailedError(text)
        if provider is Provider.FAL and status == 504 and headers.get("X-Fal-Request-Timeout-Type"):
            return ProviderFailedError(text)  # a deadline we set fired: retrying cannot help
        if submit and status == 504:
            # A gateway gave up waiting on the provider: the job may have been accepted all the same.
            return UnknownOutcomeError(f"{text} (outcome unknown: the provider may have billed it)")
        return TransientError(text, retry_after=retry_after)
    return ProviderFailedError(text)


def job_failure(message: str, text: str | None = None, *, invalid: bool = False) -> BackendError:
    """Classify a failure the provider reported for the job itself (a failed status or a 4xx body)."""
    text = text or message or "the provider reported a failure without a message"
    if _CREDIT_WORDS.search(message):
        return OutOfCreditError(text)
    if _CONTENT_WORDS.search(message):
        return ContentPolicyError(text)
    if _FACE_WORDS.search(message):
        return NoFaceError(text)
    return InvalidInputError(text) if invalid else ProviderFailedError(text)


# ---------------------------------------------------------------------------------------------------------
# Images in and out

_MAGIC: tuple[tuple[str, Callable[[bytes], bool]], ...] = (
    ("image/jpeg", lambda b: b[:3] == b"\xff\xd8\xff"),
    ("image/png", lambda b: b[:8] == b"\x89PNG\r\n\x1a\n"),
    ("image/webp", lambda b: b[:4] == b"RIFF" and b[8:12] == b"WEBP"),
)


def sniff_image(data: bytes) -> str | None:
    """The content type of a JPEG, PNG or WEBP by its magic bytes, else None."""
    for content_type, matches in _MAGIC:
        if matches(data):
            return content_type
    return None


def data_uri(image: bytes) -> str:
    content_type = sniff_image(image)
    if content_type is None:
        raise InvalidInputError("face photo is not a JPEG, PNG or WEBP image")
    return f"data:{content_type};base64,{base64.b64encode(image).decode('ascii')}"


def decode_data_uri(uri: str) -> bytes:
    header, sep, payload = uri.partition(",")
    if not sep or not header.startswith("data:"):
        raise ProtocolError("output data URI is malformed")
    if header.endswith(";base64"):
        return _b64(payload)
    raise ProtocolError("output data URI is not base64")


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("output is not valid base64") from None


def output_image(data: bytes, *, nsfw: bool = False) -> OutputImage:
    """Validate downloaded bytes as an image (magic bytes, pixel bound, complete data) and measure it."""
    content_type = sniff_image(data)
    if content_type is None:
        raise ProtocolError(f"output is not a JPEG, PNG or WEBP image ({len(data)} bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if width * height > MAX_OUTPUT_PIXELS:
                    raise ProtocolError(f"output image is too large ({width}x{height})")
                image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ProtocolError(f"output {content_type} is truncated or corrupt") from None
    return OutputImage(data=data, content_type=content_type, width=width, height=height, nsfw=nsfw)


# ---------------------------------------------------------------------------------------------------------
# The client


class ProviderHttp:
    """One provider's HTTP calls over a shared session, with its auth header and failure rules.

    The submit POST is sent exactly once: a transport failure after sending raises UnknownOutcomeError
    because none of the providers offers an idempotency key. Everything else is retried when safe.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        provider: Provider,
        *,
        auth: Mapping[str, str],
        secrets: Sequence[str],
        timing: Timing | None = None,
        retry: RetryPolicy | None = None,
        timeouts: Timeouts | None = None,
    ) -> None:
        self.session = session
        self.provider = provider
        self._auth = dict(auth)
        self._secrets = tuple(s for s in secrets if s)
        self.timing = timing or Timing()
        self.retry = retry or RetryPolicy()
        self.timeouts = timeouts or Timeouts()
        self._background: set[asyncio.Task[None]] = set()

    def clean(self, text: str) -> str:
        """Provider text fit for errors and logs: our secrets removed, length bounded."""
        return redact(text, self._secrets)[: _DETAIL_CHARS * 2]

    def _timeout(self, total: float) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=total, sock_connect=min(total, self.timeouts.connect_s))

    async def _send(
        self,
        method: str,
        url: str,
        *,
        limit_s: float,
        json_body: Any = None,
        form: aiohttp.FormData | None = None,
        auth: bool = True,
        limit: int = MAX_OUTPUT_BYTES,
    ) -> Reply:
        headers = dict(self._auth) if auth else {}
        log.debug("%s %s %s", self.provider, method, _safe_url(url))
        async with self.session.request(
            method,
            url,
            headers=headers,
            json=json_body,
            data=form,
            timeout=self._timeout(limit_s),
            allow_redirects=not auth,  # never carry the key to wherever a redirect points
            raise_for_status=False,  # statuses are classified here, whatever the shared session says
        ) as response:
            body = bytearray()
            async for chunk in response.content.iter_chunked(64 * 1024):
                body.extend(chunk)
                if len(body) > limit:
                    raise ProtocolError(f"{self.provider} answer exceeds {limit} bytes")
            return Reply(response.status, response.headers.copy(), bytes(body))

    def error_for(self, reply: Reply, *, submit: bool, where: str) -> BackendError:
        message = self.clean(_body_message(reply))
        return classify_status(self.provider, reply.status, message, reply.headers, submit=submit, where=where)

    async def submit(
        self,
        url: str,
        *,
        json_body: Any = None,
        what: str = "submit",
    ) -> Reply:
        """POST a job once. Returns a successful reply; raises a classified error otherwise."""
        try:
            reply = await self._send("POST", url, limit_s=self.timeouts.submit_s, json_body=json_body)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            # Nothing reached the provider, so sending again later is safe.
            raise TransientError(f"{self.provider} {what}: could not connect ({type(exc).__name__})") from None
        except (TimeoutError, aiohttp.ClientError) as exc:
            log.warning("%s %s: outcome unknown after sending (%s)", self.provider, what, type(exc).__name__)
            raise UnknownOutcomeError(
                f"{self.provider} {what}: no answer after sending ({type(exc).__name__}); "
                "the provider may have accepted and billed it"
            ) from None
        if not reply.ok:
            raise self.error_for(reply, submit=True, where=what)
        return reply

    async def call(
        self,
        method: str,
        url: str,
        *,
        what: str,
        parse: Callable[[Reply], T],
        form: Callable[[], aiohttp.FormData] | None = None,
        auth: bool = True,
        expired: bool = False,
    ) -> T:
        """An idempotent call, retried on transient failures and malformed answers with bounded backoff.

        ``parse`` turns a successful reply into a value and may raise TransientError or
        MalformedReplyError to have the call retried. ``expired``: 401/403/404/410 mean an output is gone.
        """
        last: BackendError = TransientError(f"{self.provider} {what}: not attempted")
        for attempt in range(self.retry.attempts):
            try:
                reply = await self._send(
                    method,
                    url,
                    limit_s=self.timeouts.download_s if expired else self.timeouts.request_s,
                    form=form() if form is not None else None,
                    auth=auth,
                )
                if expired and reply.status in (401, 403, 404, 410):
                    raise OutputExpiredError(f"{self.provider} {what}: HTTP {reply.status} (output gone)")
                if not reply.ok:
                    raise self.error_for(reply, submit=False, where=what)
                return parse(reply)
            except (TransientError, MalformedReplyError) as exc:
                last = exc
            except (TimeoutError, aiohttp.ClientError) as exc:
                last = TransientError(f"{self.provider} {what}: {type(exc).__name__}")
            if attempt + 1 < self.retry.attempts:
                delay = self.retry.delay(attempt, last.retry_after, self.timing.jitter())
                log.info("%s %s: retrying in %.1f s (%s)", self.provider, what, delay, last.detail)
                await self.timing.sleep(delay)
        if isinstance(last, MalformedReplyError):
            raise ProtocolError(f"{last.detail} after {self.retry.attempts} attempts") from None
        raise last

    async def get_json(self, url: str, *, what: str, check: Callable[[Any], None] | None = None) -> Any:
        def parse(reply: Reply) -> Any:
            payload = reply.json()
            if check is not None:
                check(payload)
            return payload

        return await self.call("GET", url, what=what, parse=parse)

    async def cancel(self, method: str, url: str) -> None:
        """Best-effort cancel at the provider, shielded from our own cancellation and bounded in time."""

        async def send() -> None:
            try:
                reply = await self._send(method, url, limit_s=self.timeouts.cancel_s)
                log.info("%s cancel answered HTTP %s", self.provider, reply.status)
            except (TimeoutError, aiohttp.ClientError, BackendError) as exc:
                log.warning("%s cancel failed (%s)", self.provider, type(exc).__name__)

        task = asyncio.ensure_future(send())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        try:
            await asyncio.wait_for(asyncio.shield(task), self.timeouts.cancel_s)
        except TimeoutError:
            log.warning("%s cancel did not answer within %.0f s", self.provider, self.timeouts.cancel_s)

    async def fetch_output(self, ref: str, *, nsfw: bool = False) -> OutputImage:
        """An output given as a URL, a data URI or bare base64, validated as an image."""
        if ref.startswith("data:"):
            return output_image(decode_data_uri(ref), nsfw=nsfw)
        if ref.startswith(("http://", "https://")):
            data = await self.call(
                "GET", ref, what="output download", parse=lambda reply: reply.body, auth=False, expired=True
            )
            return output_image(data, nsfw=nsfw)
        return output_image(_b64(ref), nsfw=nsfw)


def _safe_url(url: str) -> str:
    """The URL without its query (where signed URLs keep their tokens)."""
    return url.split("?", 1)[0]


def model_or_protocol(factory: Callable[[Any], T], payload: Any, what: str) -> T:
    """Validate a provider payload, turning validation errors into MalformedReplyError."""
    try:
        return factory(payload)
    except ValueError as exc:  # pydantic.ValidationError is a ValueError
        raise MalformedReplyError(f"{what}: unexpected answer shape ({_first_line(str(exc))})") from None


def _first_line(text: str) -> str:
    return text.splitlines()[0][:_DETAIL_CHARS] if text else ""
