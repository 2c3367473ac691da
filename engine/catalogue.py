"""The backend catalogue: every backend's name, in default route order, with what it can render.

Settings validate names against it, the provider registry builds from it and the Discord commands take
their option ranges from it, so a backend is declared once.
"""

from __future__ import annotations

from types import MappingProxyType

from engine.capabilities import Capabilities
from engine.local.backend import CAPABILITIES as LOCAL_CAPABILITIES
from engine.providers.fal import FLUX_PULID_CAPABILITIES, PULID_CAPABILITIES
from engine.providers.replicate import ReplicateFluxPulidBackend
from engine.providers.segmind import SegmindFluxPulidBackend
from engine.providers.wavespeed import WaveSpeedFluxPulidBackend

LOCAL = "local"

# Name -> documented capabilities; the order is the default route preference (providers, then local).
CAPABILITIES: MappingProxyType[str, Capabilities] = MappingProxyType(
    {
        "fal-flux-pulid": FLUX_PULID_CAPABILITIES,
        "fal-pulid": PULID_CAPABILITIES,
        "replicate-flux-pulid": ReplicateFluxPulidBackend.capabilities,
        "wavespeed-flux-pulid": WaveSpeedFluxPulidBackend.capabilities,
        "segmind-flux-pulid": SegmindFluxPulidBackend.capabilities,
        LOCAL: LOCAL_CAPABILITIES,
    }
)

BACKEND_NAMES: tuple[str, ...] = tuple(CAPABILITIES)
PROVIDER_NAMES: tuple[str, ...] = tuple(name for name in BACKEND_NAMES if name != LOCAL)
