"""A dispatcher wired to fake providers over a real store, for the dispatcher's and the CLI's tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from pydantic import SecretStr

from engine.dispatch import Dispatcher
from engine.events import JobProgress, ProgressHub
from engine.providers.http import Timeouts, Timing
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

FACE = tiny_image("jpeg", (64, 64))


async def _quick_sleep(seconds: float) -> None:
    # Provider polls really wait a little, so heartbeats and cancels interleave with them.
    await asyncio.sleep(min(seconds, 0.01))


@dataclass
class Harness:
    db: Database
    blobs: LocalBlobStore
    fal: FakeFal
    replicate: FakeReplicate
    http: aiohttp.ClientSession
    hub: ProgressHub = field(default_factory=ProgressHub)
    backoffs: list[float] = field(default_factory=list)
    events: list[JobProgress] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.hub.subscribe(self.events.append)

    async def record_sleep(self, seconds: float) -> None:
        self.backoffs.append(seconds)
        await asyncio.sleep(0)

    def dispatcher(
        self,
        route: list[str],
        *,
        lease_s: float = 30,
        heartbeat_s: float = 0.05,
        worker: str = "w1",
        **settings: object,
    ) -> Dispatcher:
        backends = build_provider_backends(
            self.http,
            fal=FalSettings(key=SecretStr(fal.KEY), base_url=self.fal.url),
            replicate=ReplicateSettings(
                token=SecretStr(replicate.TOKEN), base_url=self.replicate.url, version=replicate.VERSION
            ),
            wavespeed=WaveSpeedSettings(),
            segmind=SegmindSettings(),
            timing=Timing(sleep=_quick_sleep, jitter=lambda: 0.5),
            timeouts=Timeouts(request_s=1.0, submit_s=0.5, connect_s=0.5, download_s=1.0, cancel_s=0.5),
        )
        dispatch_settings = DispatchSettings(**settings)  # type: ignore[arg-type]
        router = Router(backends, route, Dispatcher.breakers_for(list(backends), dispatch_settings))
        return Dispatcher(
            self.db,
            self.blobs,
            router,
            settings=dispatch_settings,
            queue=QueueSettings(lease_s=lease_s, heartbeat_s=heartbeat_s),
            hub=self.hub,
            worker_id=worker,
            sleep=self.record_sleep,
            jitter=lambda: 1.0,
        )

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
            now=time.time(),
            daily_jobs_default=100,
        )

    async def job(self, job_id: str) -> Job:
        found = await self.db.read(jobs.get, job_id=job_id)
        assert found is not None
        return found


@asynccontextmanager
async def harness(db: Database, tmp_path: Path) -> AsyncIterator[Harness]:
    async with AsyncExitStack() as stack:
        fake_fal = await stack.enter_async_context(start_fal())
        fake_replicate = await stack.enter_async_context(start_replicate())
        http = await stack.enter_async_context(aiohttp.ClientSession())
        yield Harness(db, LocalBlobStore(tmp_path / "blobs"), fake_fal, fake_replicate, http)
