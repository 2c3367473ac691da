"""Fixtures for provider tests: a virtual clock, an HTTP session and each provider's fake server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from engine.providers.http import RetryPolicy, Timeouts, Timing
from tests.fakes.fal import FakeFal, start_fal
from tests.fakes.providers_common import VirtualClock
from tests.fakes.replicate import FakeReplicate, start_replicate
from tests.fakes.segmind import FakeSegmind, start_segmind
from tests.fakes.wavespeed import FakeWaveSpeed, start_wavespeed


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def timing(clock: VirtualClock) -> Timing:
    return Timing(sleep=clock.sleep, clock=clock.now, jitter=lambda: 0.5)


@pytest.fixture
def retry() -> RetryPolicy:
    return RetryPolicy(attempts=4, base_delay_s=0.5, max_delay_s=8.0)


@pytest.fixture
def timeouts() -> Timeouts:
    # Short real timeouts: the "hang" faults must trip them within a fraction of a second.
    return Timeouts(request_s=0.5, submit_s=0.3, connect_s=0.3, download_s=0.5, cancel_s=0.5)


@pytest.fixture
async def http_session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def fake_fal(clock: VirtualClock) -> AsyncIterator[FakeFal]:
    async with start_fal(clock=clock.now) as fake:
        yield fake


@pytest.fixture
async def fake_replicate(clock: VirtualClock) -> AsyncIterator[FakeReplicate]:
    async with start_replicate(clock=clock.now) as fake:
        yield fake


@pytest.fixture
async def fake_wavespeed(clock: VirtualClock) -> AsyncIterator[FakeWaveSpeed]:
    async with start_wavespeed(clock=clock.now) as fake:
        yield fake


@pytest.fixture
async def fake_segmind(clock: VirtualClock) -> AsyncIterator[FakeSegmind]:
    async with start_segmind(clock=clock.now) as fake:
        yield fake
