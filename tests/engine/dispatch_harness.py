"""A dispatcher over a real store on a manual virtual clock, wired to fake providers or to given backends.

The dispatcher's own waits (heartbeats, backoffs, rate tokens, claim polls) go through the virtual clock:
heartbeats stay parked until a test calls ``beat``; ``drain`` moves time over every other wait. The fake
providers run on real time, with their polls cut short, over real HTTP on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from pydantic import SecretStr

from engine.backend import Backend
from engine.clock import Clock, SystemClock
from engine.dispatch import Dispatcher
from engine.events import JobProgress, ProgressHub
from engine.providers.client import Timeouts
from engine.providers.registry import build_provider_backends
from engine.providers.settings import FalSettings, ReplicateSettings, SegmindSettings, WaveSpeedSettings
from engine.request import GenerationRequest
from engine.routing import Router
from engine.settings import DispatchSettings
from storage import jobs
from storage.blobs import LocalBlobStore
from storage.db import Database
from storage.models import Job
from storage.settings import QueueSettings
from tests.fakes import fal, replicate
from tests.fakes.fal import FakeFal, start_fal
from tests.fakes.providers_common import tiny_image
from tests.fakes.replicate import FakeReplicate, start_replicate
from tests.virtual_clock import ManualClock

FACE = tiny_image("jpeg", (64, 64))
# Far apart from every backoff a test waits out, so ``drain`` tells a heartbeat from a backoff by its length.
HEARTBEAT_S = 300.0
LEASE_S = 900.0


class _QuickClock(SystemClock):
    """Real time for the fake providers, with their polls cut short: they really wait a little, so
    heartbeats and cancels interleave with them."""

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(min(seconds, 0.01))

    def jitter(self) -> float:
        return 0.5


@dataclass
class Harness:
    db: Database
    blobs: LocalBlobStore
    fal: FakeFal
    replicate: FakeReplicate
    http: aiohttp.ClientSession
    clock: Clock = field(default_factory=ManualClock)  # SYSTEM_CLOCK for the tests that need real time
    hub: ProgressHub = field(default_factory=ProgressHub)
    backoffs: list[float] = field(default_factory=list)  # the waits ``drain`` moved the clock over
    events: list[JobProgress] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.hub.subscribe(self.events.append)

    def dispatcher(
        self,
        route: list[str],
        *,
        backends: dict[str, Backend] | None = None,
        lease_s: float = LEASE_S,
        heartbeat_s: float = HEARTBEAT_S,
        worker: str = "w1",
        **settings: object,
    ) -> Dispatcher:
        if backends is None:
            backends = build_provider_backends(
                self.http,
                fal=FalSettings(key=SecretStr(fal.KEY), base_url=self.fal.url),
                replicate=ReplicateSettings(
                    token=SecretStr(replicate.TOKEN), base_url=self.replicate.url, version=replicate.VERSION
                ),
                wavespeed=WaveSpeedSettings(),
                segmind=SegmindSettings(),
                clock=_QuickClock(),
                timeouts=Timeouts(request_s=1.0, submit_s=0.5, connect_s=0.5, download_s=1.0, cancel_s=0.5),
            )
        dispatch_settings = DispatchSettings(**settings)  # type: ignore[arg-type]
        breakers = Dispatcher.breakers_for(list(backends), dispatch_settings, clock=self.clock)
        if isinstance(self.clock, ManualClock):
            self.clock.fixed_jitter = 1.0  # backoffs at the top of each step: 1, 2, 4 s with the default base
        return Dispatcher(
            self.db,
            self.blobs,
            Router(backends, route, breakers),
            settings=dispatch_settings,
            queue=QueueSettings(lease_s=lease_s, heartbeat_s=heartbeat_s),
            hub=self.hub,
            worker_id=worker,
            clock=self.clock,
        )

    async def drain(self, dispatcher: Dispatcher, *, within_s: float = 20.0) -> None:
        """``dispatcher.drain()``: each wait but a heartbeat (backoffs, rate tokens) passes at once, the clock
        moved over it and the wait recorded in ``backoffs``."""
        clock = self._manual()
        heartbeat_s = dispatcher.queue.heartbeat_s
        draining = asyncio.ensure_future(dispatcher.drain())
        try:
            async with asyncio.timeout(within_s):
                while not draining.done():
                    waits = [(left, asked) for left, asked in clock.parked() if asked != heartbeat_s]
                    if waits:
                        left, asked = waits[0]
                        self.backoffs.append(asked)
                        clock.advance(left)
                        continue
                    parked = asyncio.ensure_future(clock.changed())
                    await asyncio.wait({draining, parked}, return_when=asyncio.FIRST_COMPLETED)
                    parked.cancel()
        finally:
            if not draining.done():
                draining.cancel()
                await dispatcher.abandon()
        await draining

    async def beat(self, dispatcher: Dispatcher, *, within_s: float = 5.0) -> None:
        """Move the clock one heartbeat on, once a heartbeat waits: each running job beats once."""
        clock = self._manual()
        heartbeat_s = dispatcher.queue.heartbeat_s
        async with asyncio.timeout(within_s):
            while not any(asked == heartbeat_s for _, asked in clock.parked()):
                await clock.changed()
        clock.advance(heartbeat_s)

    def _manual(self) -> ManualClock:
        assert isinstance(self.clock, ManualClock), "on real time, drive the dispatcher itself"
        return self.clock

    async def submit(
        self,
        job_id: str,
        user_id: int,
        *,
        route: list[str] | None = None,
        pinned: bool = False,
        **params: object,
    ) -> None:
        face_key = await self.blobs.put(FACE)
        request = GenerationRequest(prompt="a portrait", faces=(FACE,), **params)  # type: ignore[arg-type]
        await self.db.write(
            jobs.submit,
            job=jobs.NewJob(
                id=job_id,
                user_id=user_id,
                params=request.to_params(),
                cost=1,
                face_keys=[face_key],
                route=route or [],
                pinned=pinned,
                deadline_s=600,
            ),
            now=self.clock.time(),
            daily_jobs_default=100,
        )

    async def job(self, job_id: str) -> Job:
        found = await self.db.read(jobs.get, job_id=job_id)
        assert found is not None
        return found


@asynccontextmanager
async def harness(db: Database, tmp_path: Path, *, clock: Clock | None = None) -> AsyncIterator[Harness]:
    async with AsyncExitStack() as stack:
        fake_fal = await stack.enter_async_context(start_fal())
        fake_replicate = await stack.enter_async_context(start_replicate())
        http = await stack.enter_async_context(aiohttp.ClientSession())
        yield Harness(db, LocalBlobStore(tmp_path / "blobs"), fake_fal, fake_replicate, http, clock or ManualClock())
