"""Builds every remote provider backend from its settings over one shared HTTP session."""

from __future__ import annotations

import aiohttp

from engine.backend import Backend
from engine.providers.fal import FalFluxPulidBackend, FalPulidBackend
from engine.providers.http import Timeouts, Timing
from engine.providers.replicate import ReplicateFluxPulidBackend
from engine.providers.segmind import SegmindFluxPulidBackend
from engine.providers.settings import FalSettings, ReplicateSettings, SegmindSettings, WaveSpeedSettings
from engine.providers.wavespeed import WaveSpeedFluxPulidBackend

# The order is the default route preference.
PROVIDER_BACKENDS = (
    "fal-flux-pulid",
    "fal-pulid",
    "replicate-flux-pulid",
    "wavespeed-flux-pulid",
    "segmind-flux-pulid",
)


def build_provider_backends(
    session: aiohttp.ClientSession,
    *,
    fal: FalSettings,
    replicate: ReplicateSettings,
    wavespeed: WaveSpeedSettings,
    segmind: SegmindSettings,
    timing: Timing | None = None,
    timeouts: Timeouts | None = None,
) -> dict[str, Backend]:
    """All provider backends by name, in route order; unconfigured ones say why via unavailable_reason()."""
    backends: list[Backend] = [
        FalFluxPulidBackend(session, fal, timing=timing, timeouts=timeouts),
        FalPulidBackend(session, fal, timing=timing, timeouts=timeouts),
        ReplicateFluxPulidBackend(session, replicate, timing=timing, timeouts=timeouts),
        WaveSpeedFluxPulidBackend(session, wavespeed, timing=timing, timeouts=timeouts),
        SegmindFluxPulidBackend(session, segmind, timing=timing, timeouts=timeouts),
    ]
    by_name = {backend.name: backend for backend in backends}
    assert tuple(by_name) == PROVIDER_BACKENDS
    return by_name
