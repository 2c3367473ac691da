"""Shared machinery for the fake provider servers: request log, fault scripts, tiny images and a fake CDN."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import itertools
import json
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, Self

from aiohttp import web
from aiohttp.test_utils import TestServer
from PIL import Image

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

EXPIRED_XML = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
    "<Message>Request has expired</Message></Error>"
)


def tiny_image(fmt: str = "png", size: tuple[int, int] = (8, 6), color: tuple[int, int, int] = (200, 120, 60)) -> bytes:
    """A small valid image in ``fmt`` (png, jpeg/jpg or webp), built in memory."""
    pil_format = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}[fmt.lower()]
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format=pil_format)
    return buffer.getvalue()


CONTENT_TYPES = {"jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}


@dataclass
class LoggedRequest:
    route: str
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class Fault:
    """A canned answer consumed once, in order, before a route behaves normally again.

    ``passthrough`` runs the real handler first (so a submitted job really exists) and then applies
    ``hang_s``/``drop`` — how a test makes a submit whose outcome the client cannot know.
    """

    status: int = 500
    json: Any = None
    text: str | None = None
    body: bytes | None = None
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    hang_s: float | None = None
    drop: bool = False
    passthrough: bool = False

    def response(self) -> web.Response:
        if self.body is not None:
            return web.Response(
                status=self.status,
                body=self.body,
                content_type=self.content_type or "application/octet-stream",
                headers=self.headers,
            )
        if self.json is not None:
            body = json.dumps(self.json)
            content_type = self.content_type or "application/json"
        else:
            body = self.text or ""
            content_type = self.content_type or "text/plain"
        return web.Response(status=self.status, text=body, content_type=content_type, headers=self.headers)


def malformed_json(status: int = 200) -> Fault:
    return Fault(status=status, text='{"status":', content_type="application/json")


def html_page(status: int = 502) -> Fault:
    return Fault(
        status=status,
        text="<html><head><title>502 Bad Gateway</title></head><body><center>nginx</center></body></html>",
        content_type="text/html",
    )


@dataclass
class CdnFile:
    data: bytes
    content_type: str
    expires_at: float | None


class FakeProvider:
    """Base of the fake servers: an aiohttp app on 127.0.0.1 with a request log, faults and a CDN."""

    expired_status = 403
    open_routes: frozenset[str] = frozenset({"cdn"})  # answered without credentials

    def __init__(self, *, clock: Callable[[], float] | None = None) -> None:
        self.clock = clock or time.monotonic
        self.app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        self.log: list[LoggedRequest] = []
        self.faults: dict[str, deque[Fault]] = defaultdict(deque)
        self.cdn: dict[str, CdnFile] = {}
        self.in_flight = 0
        self.high_water = 0
        self.accepted = 0  # jobs the provider took (and would bill)
        self._ids = itertools.count(1)
        self._closing = asyncio.Event()
        self._server: TestServer | None = None
        self.app.router.add_get("/cdn/{name}", self._cdn_get, name="cdn")

    # -- lifecycle ---------------------------------------------------------------------------------------

    async def start(self) -> Self:
        self._server = TestServer(self.app, host="127.0.0.1", port=0)
        await self._server.start_server()
        return self

    async def close(self) -> None:
        self._closing.set()
        if self._server is not None:
            await self._server.close()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def url(self) -> str:
        """Base URL without a trailing slash, e.g. ``http://127.0.0.1:41234``."""
        assert self._server is not None, "fake server not started"
        return str(self._server.make_url("")).rstrip("/")

    def new_id(self, prefix: str = "req") -> str:
        return f"{prefix}-{next(self._ids):04d}"

    # -- faults and log ----------------------------------------------------------------------------------

    def fail(self, route: str, *faults: Fault) -> None:
        """Queue ``faults`` for ``route`` (the route names each fake lists)."""
        self.faults[route].extend(faults)

    def requests(self, route: str | None = None, method: str | None = None) -> list[LoggedRequest]:
        return [r for r in self.log if (route is None or r.route == route) and (method is None or r.method == method)]

    def job_started(self) -> None:
        self.accepted += 1
        self.in_flight += 1
        self.high_water = max(self.high_water, self.in_flight)

    def job_finished(self) -> None:
        self.in_flight -= 1

    def refuse(self, request: web.Request) -> web.Response | None:
        """The provider's answer to a call without valid credentials, or None to let it through."""
        return None

    async def _handle(self, route: str, request: web.Request, handler: Handler) -> web.StreamResponse:
        refused = None if route in self.open_routes else self.refuse(request)
        return refused if refused is not None else await handler(request)

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route.name or "unknown"
        # Multipart bodies are left unread so the handler can stream them itself.
        body = b"" if request.content_type.startswith("multipart/") else await request.read()
        self.log.append(
            LoggedRequest(
                route=route,
                method=request.method,
                path=request.path,
                query=dict(request.query),
                headers=dict(request.headers),
                body=body,
                at=self.clock(),
            )
        )
        queue = self.faults.get(route)
        fault = queue.popleft() if queue else None
        if fault is None:
            return await self._handle(route, request, handler)
        response: web.StreamResponse = fault.response()
        if fault.passthrough:
            response = await self._handle(route, request, handler)
        if fault.hang_s is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), fault.hang_s)
        if fault.drop and request.transport is not None:
            request.transport.close()
        return response

    # -- CDN -----------------------------------------------------------------------------------------------

    def publish(self, data: bytes, content_type: str, *, ttl_s: float | None = None, base: str | None = None) -> str:
        name = f"{self.new_id('file')}.{content_type.rsplit('/', 1)[-1]}"
        expires = None if ttl_s is None else self.clock() + ttl_s
        self.cdn[name] = CdnFile(data, content_type, expires)
        return f"{base or self.url}/cdn/{name}"

    def expire_outputs(self) -> None:
        for item in self.cdn.values():
            item.expires_at = self.clock() - 1

    def cdn_bytes(self, url: str) -> bytes | None:
        item = self.cdn.get(url.rsplit("/", 1)[-1])
        return None if item is None else item.data

    async def _cdn_get(self, request: web.Request) -> web.Response:
        item = self.cdn.get(request.match_info["name"])
        if item is None or (item.expires_at is not None and self.clock() >= item.expires_at):
            if self.expired_status == 403:
                return web.Response(status=403, text=EXPIRED_XML, content_type="application/xml")
            return web.Response(status=self.expired_status, text="Not Found")
        return web.Response(body=item.data, content_type=item.content_type)


def origin(request: web.Request) -> str:
    return str(request.url.origin())


def is_image_reference(value: Any, known_urls: set[str] | None = None) -> bool:
    """A data URI holding a JPEG/PNG/WEBP, or an http(s) URL (one the fake issued, when given)."""
    if not isinstance(value, str):
        return False
    if value.startswith("data:image/") and ";base64," in value:
        try:
            data = base64.b64decode(value.split(",", 1)[1], validate=True)
        except ValueError:
            return False
        return data[:3] == b"\xff\xd8\xff" or data[:4] == b"\x89PNG" or data[8:12] == b"WEBP"
    if value.startswith(("http://", "https://")):
        return known_urls is None or value in known_urls
    return False


def number_problem(name: str, value: Any, low: float, high: float, *, integer: bool = False) -> str | None:
    """A provider-neutral description of why ``value`` is outside ``[low, high]``, or None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{name} must be a number"
    if integer and int(value) != value:
        return f"{name} must be an integer"
    if value < low:
        return f"{name} must be greater than or equal to {low}"
    if value > high:
        return f"{name} must be less than or equal to {high}"
    return None


class TickedJob(Protocol):
    """A fake job that moves one step each time its status is polled."""

    polls: int
    status: str
    finished: bool


def tick(job: TickedJob, phases: Sequence[tuple[str, int]], *, stuck: bool = False) -> bool:
    """Count one poll of ``job``: it takes each ``(status, polls)`` phase in turn. True when it has just run
    through them all and the caller should finish it; a stuck or finished job does not move."""
    if job.finished or stuck:
        return False
    job.polls += 1
    for (status, _), until in zip(phases, itertools.accumulate(count for _, count in phases), strict=True):
        if job.polls <= until:
            job.status = status
            return False
    return True


# ByteDance's flux-pulid input as Replicate's model page and Segmind's API page both publish it:
# the fields, and (low, high, integer) for each number.
FLUX_PULID_FIELDS = {
    "main_face_image", "prompt", "negative_prompt", "width", "height", "num_steps", "start_step",
    "guidance_scale", "id_weight", "true_cfg", "max_sequence_length", "num_outputs", "output_format",
    "output_quality", "seed",
}  # fmt: skip
FLUX_PULID_LIMITS: dict[str, tuple[float, float, bool]] = {
    "width": (256, 1536, True),
    "height": (256, 1536, True),
    "num_steps": (1, 20, True),
    "start_step": (0, 10, True),
    "guidance_scale": (1, 10, False),
    "id_weight": (0, 3, False),
    "true_cfg": (1, 10, False),
    "max_sequence_length": (128, 512, True),
    "num_outputs": (1, 4, True),
    "output_quality": (1, 100, True),
}


def flux_pulid_number_problems(values: dict[str, Any]) -> list[tuple[str, str]]:
    """(field, message) for each number outside flux-pulid's published range."""
    problems = []
    for name, (low, high, integer) in FLUX_PULID_LIMITS.items():
        if name in values:
            problem = number_problem(name, values[name], low, high, integer=integer)
            if problem:
                problems.append((name, problem))
    return problems


class RecordingProgress:
    """A Progress that remembers what a backend reported; ``resume`` makes the backend poll that ref."""

    def __init__(self, resume: Any = None, *, on_submitted: Callable[[], None] | None = None) -> None:
        self._resume = resume
        self._on_submitted = on_submitted
        self.refs: list[Any] = []
        self.updates: list[tuple[str, int | None]] = []
        self.abandoned = False
        self.submits = 0  # submits the backend announced before sending them

    @property
    def resume(self) -> Any:
        return self._resume

    async def submitting(self) -> None:
        self.submits += 1

    async def submitted(self, ref: Any) -> None:
        self.refs.append(ref)
        if self._on_submitted is not None:
            self._on_submitted()

    async def update(self, stage: Any, *, queue_position: int | None = None, fraction: float | None = None) -> None:
        self.updates.append((str(stage), queue_position))


async def eventually(predicate: Callable[[], bool], *, within_s: float = 5.0) -> None:
    """Wait (really, briefly) until ``predicate`` holds: for tests that watch a fake from outside."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.002)
