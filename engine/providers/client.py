"""The HTTP client of the provider backends: one submit sent once, idempotent calls retried, outputs fetched."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp

from engine.backend import OutputImage
from engine.clock import SYSTEM_CLOCK, Clock, backoff_delay
from engine.errors import BackendError, OutputExpiredError, ProtocolError, TransientError, UnknownOutcomeError
from engine.providers.failures import (
    DETAIL_CHARS,
    HttpFailure,
    MalformedReplyError,
    VendorRules,
    body_message,
    classify,
    no_vendor_rules,
    redact,
    retry_after_s,
)
from engine.providers.images import (
    MAX_OUTPUT_BYTES,
    decode_base64,
    decode_data_uri,
    face_content_type,
    output_image,
)

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff with jitter for idempotent calls (polls, result fetches, downloads)."""

    attempts: int = 5
    base_delay_s: float = 0.5
    max_delay_s: float = 15.0
    min_delay_s: float = 0.0  # some providers ask for a minimum gap between calls
    max_retry_after_s: float = 120.0  # a longer Retry-After is cut to this: the job's own deadline still runs

    def delay(self, retry: int, retry_after: float | None, jitter: float) -> float:
        """Seconds before retry number ``retry`` (1 for the first)."""
        return backoff_delay(
            retry,
            base_s=self.base_delay_s,
            cap_s=self.max_delay_s,
            jitter=jitter,
            retry_after_s=None if retry_after is None else min(retry_after, self.max_retry_after_s),
            floor_s=self.min_delay_s,
        )


@dataclass(frozen=True)
class Timeouts:
    request_s: float = 30.0
    submit_s: float = 120.0  # synchronous providers answer the submit with the image itself
    connect_s: float = 10.0
    download_s: float = 120.0
    cancel_s: float = 5.0


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


class ProviderHttp:
    """One provider's HTTP calls over a shared session, with its auth header and failure rules.

    The submit POST is sent exactly once: a transport failure after sending raises UnknownOutcomeError
    because none of the providers offers an idempotency key. Everything else is retried when safe.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        label: str,
        *,
        auth: Mapping[str, str],
        secrets: Sequence[str],
        clock: Clock = SYSTEM_CLOCK,
        retry: RetryPolicy | None = None,
        timeouts: Timeouts | None = None,
        rules: VendorRules = no_vendor_rules,
    ) -> None:
        self.session = session
        self.label = label
        self._auth = dict(auth)
        self._secrets = tuple(s for s in secrets if s)
        self.clock = clock
        self.retry = retry or RetryPolicy()
        self.timeouts = timeouts or Timeouts()
        self._rules = rules
        self._background: set[asyncio.Task[None]] = set()

    def clean(self, text: str) -> str:
        """Provider text fit for errors and logs: our secrets removed, length bounded."""
        return redact(text, self._secrets)[: DETAIL_CHARS * 2]

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
        log.debug("%s %s %s", self.label, method, _safe_url(url))
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
                    raise ProtocolError(f"{self.label} answer exceeds {limit} bytes")
            return Reply(response.status, response.headers.copy(), bytes(body))

    def failure(
        self, status: int, message: str, headers: Mapping[str, str], *, submit: bool, where: str
    ) -> BackendError:
        """The classified error for a failed answer (an HTTP status, or a status code inside a body)."""
        message = self.clean(message)
        text = f"{self.label} {where}: HTTP {status}" + (f": {message}" if message else "")
        retry_after = retry_after_s(headers, message, now=self.clock.time())
        return classify(HttpFailure(status, message, headers, submit, text, retry_after), self._rules)

    def error_for(self, reply: Reply, *, submit: bool, where: str) -> BackendError:
        message = body_message(reply.body, reply.content_type)
        return self.failure(reply.status, message, reply.headers, submit=submit, where=where)

    async def submit(self, url: str, *, json_body: Any = None, what: str = "submit") -> Reply:
        """POST a job once. Returns a successful reply; raises a classified error otherwise."""
        try:
            reply = await self._send("POST", url, limit_s=self.timeouts.submit_s, json_body=json_body)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            # Nothing reached the provider, so sending again later is safe.
            raise TransientError(f"{self.label} {what}: could not connect ({type(exc).__name__})") from None
        except (TimeoutError, aiohttp.ClientError) as exc:
            log.warning("%s %s: outcome unknown after sending (%s)", self.label, what, type(exc).__name__)
            raise UnknownOutcomeError(
                f"{self.label} {what}: no answer after sending ({type(exc).__name__}); "
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
        last: BackendError = TransientError(f"{self.label} {what}: not attempted")
        for attempt in range(1, self.retry.attempts + 1):
            try:
                reply = await self._send(
                    method,
                    url,
                    limit_s=self.timeouts.download_s if expired else self.timeouts.request_s,
                    form=form() if form is not None else None,
                    auth=auth,
                )
                if expired and reply.status in (401, 403, 404, 410):
                    raise OutputExpiredError(f"{self.label} {what}: HTTP {reply.status} (output gone)")
                if not reply.ok:
                    raise self.error_for(reply, submit=False, where=what)
                return parse(reply)
            except (TransientError, MalformedReplyError) as exc:
                last = exc
            except (TimeoutError, aiohttp.ClientError) as exc:
                last = TransientError(f"{self.label} {what}: {type(exc).__name__}")
            if attempt < self.retry.attempts:
                delay = self.retry.delay(attempt, last.retry_after, self.clock.jitter())
                log.info("%s %s: retrying in %.1f s (%s)", self.label, what, delay, last.detail)
                await self.clock.sleep(delay)
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

    async def upload_image(self, url: str, image: bytes, *, field_name: str, parse: Callable[[Reply], T]) -> T:
        """POST a face photo as multipart form data. An upload is not billed, so a lost answer is retried."""
        content_type = face_content_type(image)
        extension = content_type.rsplit("/", 1)[-1]

        def form() -> aiohttp.FormData:
            data = aiohttp.FormData()
            data.add_field(field_name, image, filename=f"face.{extension}", content_type=content_type)
            return data

        return await self.call("POST", url, what="upload", parse=parse, form=form)

    async def cancel(self, method: str, url: str) -> None:
        """Best-effort cancel at the provider, shielded from our own cancellation and bounded in time."""

        async def send() -> None:
            try:
                reply = await self._send(method, url, limit_s=self.timeouts.cancel_s)
                log.info("%s cancel answered HTTP %s", self.label, reply.status)
            except (TimeoutError, aiohttp.ClientError, BackendError) as exc:
                log.warning("%s cancel failed (%s)", self.label, type(exc).__name__)

        task = asyncio.ensure_future(send())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        try:
            await asyncio.wait_for(asyncio.shield(task), self.timeouts.cancel_s)
        except TimeoutError:
            log.warning("%s cancel did not answer within %.0f s", self.label, self.timeouts.cancel_s)

    async def fetch_output(self, ref: str, *, nsfw: bool = False) -> OutputImage:
        """An output given as a URL, a data URI or bare base64, validated as an image."""
        if ref.startswith("data:"):
            return output_image(decode_data_uri(ref), nsfw=nsfw)
        if ref.startswith(("http://", "https://")):
            data = await self.call(
                "GET", ref, what="output download", parse=lambda reply: reply.body, auth=False, expired=True
            )
            return output_image(data, nsfw=nsfw)
        return output_image(decode_base64(ref), nsfw=nsfw)

    async def fetch_outputs(self, refs: Sequence[str], nsfw: Sequence[bool] = ()) -> tuple[OutputImage, ...]:
        """Every output at once, each with its NSFW flag where the provider gave one."""
        flags = list(nsfw)
        return tuple(
            await asyncio.gather(
                *(
                    self.fetch_output(ref, nsfw=bool(flags[i]) if i < len(flags) else False)
                    for i, ref in enumerate(refs)
                )
            )
        )


def _safe_url(url: str) -> str:
    """The URL without its query (where signed URLs keep their tokens)."""
    return url.split("?", 1)[0]
