"""Fixtures for provider tests: a virtual clock, an HTTP session, each provider's fake server and its kit."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.engine.providers.kits import KITS, Kit
from tests.fakes.fal import FakeFal, start_fal
from tests.fakes.replicate import FakeReplicate, start_replicate
from tests.fakes.segmind import FakeSegmind, start_segmind
from tests.fakes.wavespeed import FakeWaveSpeed, start_wavespeed
from tests.virtual_clock import VirtualClock


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
async def http_session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def kit(
    request: pytest.FixtureRequest, http_session: aiohttp.ClientSession, clock: VirtualClock
) -> AsyncIterator[Kit]:
    """The kit named by the test's ``kit`` parameter, with its fake running."""
    kit_class, fake_class = KITS[request.param]
    async with fake_class(clock=clock.monotonic) as fake:
        yield kit_class(fake, http_session, clock)


@pytest.fixture
async def fake_fal(clock: VirtualClock) -> AsyncIterator[FakeFal]:
    async with start_fal(clock=clock.monotonic) as fake:
        yield fake


@pytest.fixture
async def fake_replicate(clock: VirtualClock) -> AsyncIterator[FakeReplicate]:
    async with start_replicate(clock=clock.monotonic) as fake:
        yield fake


@pytest.fixture
async def fake_wavespeed(clock: VirtualClock) -> AsyncIterator[FakeWaveSpeed]:
    async with start_wavespeed(clock=clock.monotonic) as fake:
        yield fake


@pytest.fixture
async def fake_segmind(clock: VirtualClock) -> AsyncIterator[FakeSegmind]:
    async with start_segmind(clock=clock.monotonic) as fake:
        yield fake
