"""Settings for each remote provider, composed into the application settings by the front-end layer."""

from __future__ import annotations

import re

from pydantic import BaseModel, Field, SecretStr, field_validator

_VERSION = re.compile(r"^(?:[\w.-]+/[\w.-]+:)?([0-9a-f]{12,64})$")


def _base_url(value: str) -> str:
    value = value.strip()
    if not re.match(r"^https?://[^/\s]+", value):
        raise ValueError("must be an http:// or https:// URL")
    return value.rstrip("/")


class FalSettings(BaseModel):
    key: SecretStr | None = None
    base_url: str = "https://queue.fal.run"

    _check_base_url = field_validator("base_url")(_base_url)


class ReplicateSettings(BaseModel):
    token: SecretStr | None = None
    base_url: str = "https://api.replicate.com"
    # A community model: predictions must name the exact version ("owner/name:hash" or the bare hash).
    version: str | None = None
    # Replicate bills community models by GPU time; this is the rate of the hardware the version runs on
    # (the default is the published Nvidia L40S rate).
    usd_per_second: float = Field(default=0.000975, ge=0)

    _check_base_url = field_validator("base_url")(_base_url)

    @field_validator("version")
    @classmethod
    def _check_version(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        if not _VERSION.match(value):
            raise ValueError("must be a version id (hex) or owner/name:<version id>")
        return value

    @property
    def version_id(self) -> str | None:
        """The bare version id the predictions API takes."""
        if self.version is None:
            return None
        match = _VERSION.match(self.version)
        return match.group(1) if match else None


class WaveSpeedSettings(BaseModel):
    key: SecretStr | None = None
    base_url: str = "https://api.wavespeed.ai"

    _check_base_url = field_validator("base_url")(_base_url)


class SegmindSettings(BaseModel):
    key: SecretStr | None = None
    base_url: str = "https://api.segmind.com"
    usd_per_image: float = Field(default=0.036, ge=0)

    _check_base_url = field_validator("base_url")(_base_url)
