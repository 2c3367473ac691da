"""The HTTP client of the provider backends: one submit sent once, idempotent calls retried, outputs fetched."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
from yarl import URL

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

MAX_REDIRECTS = 3  # an output download follows at most this many redirects, each one checked like the first
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


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
        base_url: str,
        auth: Mapping[str, str],
        secrets: Sequence[str],
        clock: Clock = SYSTEM_CLOCK,
        retry: RetryPolicy | None = None,
        timeouts: Timeouts | None = None,
        rules: VendorRules = no_vendor_rules,
        max_output_bytes: int = MAX_OUTPUT_BYTES,
    ) -> None:
        self.session = session
        self.label = label
        self.home = origin_of(base_url)
        self._home_kinds: frozenset[str] | None = None  # what kinds of address the base URL itself is
        self.max_output_bytes = max_output_bytes
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
    ) -> Reply:
        """One call with the key to the configured host, or (``auth=False``) a download of a provider's output."""
        if not auth:
            return await self._download(url, limit_s=limit_s)
        self.check_home(url)
        log.debug("%s %s %s", self.label, method, _safe_url(url))
        return await self._exchange(
            method, url, headers=dict(self._auth), limit_s=limit_s, json_body=json_body, form=form
        )

    async def _exchange(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str],
        limit_s: float,
        json_body: Any = None,
        form: aiohttp.FormData | None = None,
        server_hostname: str | None = None,
    ) -> Reply:
        async with self.session.request(
            method,
            url,
            headers=headers,
            json=json_body,
            data=form,
            timeout=self._timeout(limit_s),
            allow_redirects=False,  # a redirect is followed, if at all, only after the same checks as the URL
            raise_for_status=False,  # statuses are classified here, whatever the shared session says
            server_hostname=server_hostname,
        ) as response:
            body = bytearray()
            async for chunk in response.content.iter_chunked(64 * 1024):
                body.extend(chunk)
                if len(body) > self.max_output_bytes:
                    raise ProtocolError(f"{self.label} answer exceeds {self.max_output_bytes} bytes")
            return Reply(response.status, response.headers.copy(), bytes(body))

    def check_home(self, url: str) -> None:
        """Refuse, before anything is sent, a URL outside the configured base URL's scheme, host and port:
        the calls that carry the key follow URLs the provider hands out, and the key goes nowhere else."""
        found = origin_of(url)
        if found != self.home:
            raise ProtocolError(
                f"{self.label}: the provider pointed to {_origin_text(found)}, not the configured "
                f"{_origin_text(self.home)}; not followed"
            )

    async def _download(self, url: str, *, limit_s: float) -> Reply:
        """GET an output without the key, hop by hop: each address checked before connecting to it, at most
        ``MAX_REDIRECTS`` redirects, the body capped."""
        for _hop in range(MAX_REDIRECTS + 1):
            target, host, tls_name = await self._checked_address(url)
            log.debug("%s GET %s", self.label, _safe_url(url))
            reply = await self._exchange(
                "GET", target, headers={"Host": host}, limit_s=limit_s, server_hostname=tls_name
            )
            location = reply.headers.get("Location")
            if reply.status not in _REDIRECTS or not location:
                return reply
            try:
                url = str(URL(url).join(URL(location)))
            except ValueError:
                raise ProtocolError(f"{self.label} output download: unreadable redirect") from None
        raise ProtocolError(f"{self.label} output download: more than {MAX_REDIRECTS} redirects")

    async def _checked_address(self, url: str) -> tuple[str, str, str | None]:
        """The URL pinned to an address its host resolves to, once every such address is one outputs may
        come from; with the Host header and the TLS name of the host itself."""
        try:
            parsed = URL(url)
        except ValueError:
            raise ProtocolError(f"{self.label} output URL is malformed") from None
        if parsed.scheme not in ("http", "https") or not parsed.host or parsed.port is None:
            raise ProtocolError(f"{self.label} output URL is not http(s): {parsed.scheme or 'no scheme'}")
        addresses = await self._resolve(parsed.host, parsed.port)
        allowed = await self._allowed_kinds()
        for address in addresses:
            kind = address_kind(address)
            if kind is not None and kind not in allowed:
                raise ProtocolError(f"{self.label} output URL leads to a {kind} address ({address}); not fetched")
        # Connecting to the address just checked (not to the name again) keeps a second DNS answer out.
        pinned = parsed.with_host(str(addresses[0]))
        tls_name = parsed.host if parsed.scheme == "https" and _literal(parsed.host) is None else None
        return str(pinned), parsed.host_port_subcomponent or parsed.host, tls_name

    async def _resolve(self, host: str, port: int) -> list[IPAddress]:
        literal = _literal(host)
        if literal is not None:
            return [literal]
        try:
            found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:  # name resolution failed: as passing as a refused connection
            raise TransientError(f"{self.label} output download: cannot resolve {host} ({exc.strerror})") from None
        addresses = [a for a in (_literal(str(info[4][0])) for info in found) if a is not None]
        if not addresses:
            raise TransientError(f"{self.label} output download: {host} has no address")
        return addresses

    async def _allowed_kinds(self) -> frozenset[str]:
        """The kinds of non-public address outputs may come from: those the configured base URL is itself
        (a provider behind a gateway on the private network, a fake on 127.0.0.1), else none."""
        if self._home_kinds is None:
            _scheme, host, port = self.home
            try:
                addresses = await self._resolve(host, port)
            except TransientError:
                addresses = []
            self._home_kinds = frozenset(k for k in map(address_kind, addresses) if k is not None)
        return self._home_kinds

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
        """An output given as an http(s) URL, a data URI or bare base64, validated as an image."""
        if ref.startswith("data:"):
            return output_image(decode_data_uri(ref), nsfw=nsfw)
        scheme, sep, _rest = ref.partition("://")
        if sep and scheme.lower() in ("http", "https"):

            def image(reply: Reply) -> OutputImage:
                # Bytes that are no image are an answer that cannot be read: downloaded again, as a garbled
                # answer to any other idempotent call is, before the job is given up.
                try:
                    return output_image(reply.body, nsfw=nsfw)
                except ProtocolError as exc:
                    raise MalformedReplyError(f"{self.label} output download: {exc.detail}") from None

            return await self.call("GET", ref, what="output download", parse=image, auth=False, expired=True)
        if sep:
            raise ProtocolError(f"{self.label} output URL is not http(s): {scheme[:20]}")
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


def origin_of(url: str) -> tuple[str, str, int]:
    """Scheme, host and port (the scheme's default when none is written) of a URL."""
    try:
        parsed = URL(url)
    except ValueError:
        raise ProtocolError("the provider gave a malformed URL") from None
    if not parsed.scheme or not parsed.host or parsed.port is None:
        raise ProtocolError(f"the provider gave a URL without a scheme or host: {_safe_url(url)[:80]}")
    return parsed.scheme.lower(), parsed.host.lower(), parsed.port


def _origin_text(origin: tuple[str, str, int]) -> str:
    scheme, host, port = origin
    return f"{scheme}://{host}:{port}"


def _literal(host: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped if mapped is not None else address


def address_kind(address: IPAddress) -> str | None:
    """What a non-public address is ("loopback", "link-local", "private", "reserved"); None when public."""
    if address.is_loopback or address.is_unspecified:  # 0.0.0.0 reaches this host too
        return "loopback"
    if address.is_link_local:  # where cloud metadata services answer
        return "link-local"
    if address.is_private:
        return "private"
    if not address.is_global or address.is_multicast:
        return "reserved"
    return None
