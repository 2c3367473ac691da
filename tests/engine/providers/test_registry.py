"""Building the provider backends from settings."""

from __future__ import annotations

import aiohttp
import pytest
from pydantic import SecretStr, ValidationError

from engine.backend import Backend
from engine.catalogue import BACKEND_NAMES, CAPABILITIES, LOCAL, PROVIDER_NAMES
from engine.providers.registry import build_provider_backends
from engine.providers.settings import FalSettings, ReplicateSettings, SegmindSettings, WaveSpeedSettings


async def test_all_backends_with_exact_names(http_session: aiohttp.ClientSession) -> None:
    backends = build_provider_backends(
        http_session,
        fal=FalSettings(key=SecretStr("k")),
        replicate=ReplicateSettings(token=SecretStr("t")),
        wavespeed=WaveSpeedSettings(),
        segmind=SegmindSettings(key=SecretStr("s")),
    )
    assert list(backends) == [
        "fal-flux-pulid",
        "fal-pulid",
        "replicate-flux-pulid",
        "wavespeed-flux-pulid",
        "segmind-flux-pulid",
    ]
    assert tuple(backends) == PROVIDER_NAMES
    for name, backend in backends.items():
        assert backend.name == name
        assert backend.capabilities is CAPABILITIES[name]
        _: Backend = backend
    reasons = {name: backend.unavailable_reason() for name, backend in backends.items()}
    assert reasons["fal-flux-pulid"] is None and reasons["fal-pulid"] is None
    assert reasons["segmind-flux-pulid"] is None
    assert "VERSION" in (reasons["replicate-flux-pulid"] or "")  # token but no pinned version
    assert "WAVESPEED" in (reasons["wavespeed-flux-pulid"] or "")


def test_the_catalogue_lists_providers_then_the_local_engine() -> None:
    assert (*PROVIDER_NAMES, LOCAL) == BACKEND_NAMES
    assert BACKEND_NAMES[0] == "fal-flux-pulid"


def test_settings_defaults_and_validation() -> None:
    assert FalSettings().base_url == "https://queue.fal.run"
    assert ReplicateSettings().base_url == "https://api.replicate.com"
    assert WaveSpeedSettings().base_url == "https://api.wavespeed.ai"
    assert SegmindSettings().base_url == "https://api.segmind.com"
    assert FalSettings(base_url="http://127.0.0.1:8080/").base_url == "http://127.0.0.1:8080"
    version = "a" * 64
    assert ReplicateSettings(version=f"bytedance/flux-pulid:{version}").version_id == version
    assert ReplicateSettings(version=version).version_id == version
    with pytest.raises(ValidationError):
        ReplicateSettings(version="latest")
    with pytest.raises(ValidationError):
        FalSettings(base_url="queue.fal.run")
    with pytest.raises(ValidationError):
        SegmindSettings(usd_per_image=-1)
    assert "secret" not in repr(FalSettings(key=SecretStr("secret")))


def test_an_empty_key_counts_as_not_configured() -> None:
    assert FalSettings(key="").key is None
    assert SegmindSettings(key="k").key is not None
    assert ReplicateSettings(token="").secret is None
    assert WaveSpeedSettings(key="w").secret is not None
