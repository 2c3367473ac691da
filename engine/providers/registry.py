"""Builds every remote provider backend from its settings over one shared HTTP session."""

from __future__ import annotations

import aiohttp

from engine.backend import Backend
from engine.catalogue import PROVIDER_CLASSES
from engine.clock import SYSTEM_CLOCK, Clock
from engine.providers.client import Timeouts
from engine.providers.fal import FAL
from engine.providers.remote import Vendor
from engine.providers.replicate import REPLICATE
from engine.providers.segmind import SEGMIND
from engine.providers.settings import (
    FalSettings,
    ProviderSettings,
    ReplicateSettings,
    SegmindSettings,
    WaveSpeedSettings,
)
from engine.providers.wavespeed import WAVESPEED


def build_provider_backends(
    session: aiohttp.ClientSession,
    *,
    fal: FalSettings,
    replicate: ReplicateSettings,
    wavespeed: WaveSpeedSettings,
    segmind: SegmindSettings,
    clock: Clock = SYSTEM_CLOCK,
    timeouts: Timeouts | None = None,
) -> dict[str, Backend]:
    """All provider backends by name, in route order; unconfigured ones say why via unavailable_reason()."""
    sections: dict[Vendor, ProviderSettings] = {FAL: fal, REPLICATE: replicate, WAVESPEED: wavespeed, SEGMIND: segmind}
    return {
        backend.name: backend(session, sections[backend.vendor], clock=clock, timeouts=timeouts)
        for backend in PROVIDER_CLASSES
    }
