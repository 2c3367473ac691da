"""The backend catalogue: every backend's name, in default route order, with what it can render.

Settings validate names against it, the provider registry builds from it and the Discord commands take
their option ranges from it, so a backend is declared once.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from engine.capabilities import Capabilities
from engine.local.backend import CAPABILITIES as LOCAL_CAPABILITIES
from engine.providers.fal import FalFluxPulidBackend, FalPulidBackend
from engine.providers.remote import RemoteBackend
from engine.providers.replicate import ReplicateFluxPulidBackend
from engine.providers.segmind import SegmindFluxPulidBackend
from engine.providers.wavespeed import WaveSpeedFluxPulidBackend

LOCAL = "local"

# The provider backends, in default route preference; the local engine comes after them.
PROVIDER_CLASSES: tuple[type[RemoteBackend[Any, Any]], ...] = (
    FalFluxPulidBackend,
    FalPulidBackend,
    ReplicateFluxPulidBackend,
    WaveSpeedFluxPulidBackend,
    SegmindFluxPulidBackend,
)

# Name -> documented capabilities, in default route order.
CAPABILITIES: MappingProxyType[str, Capabilities] = MappingProxyType(
    {**{backend.name: backend.capabilities for backend in PROVIDER_CLASSES}, LOCAL: LOCAL_CAPABILITIES}
)

BACKEND_NAMES: tuple[str, ...] = tuple(CAPABILITIES)
PROVIDER_NAMES: tuple[str, ...] = tuple(name for name in BACKEND_NAMES if name != LOCAL)
