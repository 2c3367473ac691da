"""Settings for each remote provider, composed into the application settings by the front-end layer."""

from __future__ import annotations

import re

from pydantic import BaseModel, Field, SecretStr, field_validator

_VERSION = re.compile(r"^(?:[\w.-]+/[\w.-]+:)?([0-9a-f]{12,64})$")


def reveal(secret: SecretStr | None) -> str:
    """A key's value for the one place that sends it, or "" when none is configured."""
    return secret.get_secret_value() if secret is not None else ""


def _empty_is_unset(value: object) -> object:
    # An empty LIKENESS_…__KEY (e.g. from a Compose file) means "not configured", not an empty key.
    return None if value == "" else value


def _base_url(value: str) -> str:
    value = value.strip()
    if not re.match(r"^https?://[^/\s]+", value):
        raise ValueError("must be an http:// or https:// URL")
    return value.rstrip("/")


class ProviderSettings(BaseModel):
    """What every provider section has: where the provider lives and the secret its calls carry."""

    base_url: str

    _check_base_url = field_validator("base_url")(_base_url)

    @property
    def secret(self) -> SecretStr | None:
        raise NotImplementedError


class KeyedSettings(ProviderSettings):
    """A provider whose secret is set as ``…__KEY``."""

    _unset_key = field_validator("key", mode="before")(_empty_is_unset)
    key: SecretStr | None = None

    @property
    def secret(self) -> SecretStr | None:
        return self.key


class FalSettings(KeyedSettings):
    base_url: str = "https://queue.fal.run"


class ReplicateSettings(ProviderSettings):
    _unset_token = field_validator("token", mode="before")(_empty_is_unset)
    token: SecretStr | None = None
    base_url: str = "https://api.replicate.com"
    # A community model: predictions must name the exact version ("owner/name:hash" or the bare hash).
    version: str | None = None
    # Replicate bills community models by GPU time; this is the rate of the hardware the version runs on
    # (the default is the published Nvidia L40S rate).
    usd_per_second: float = Field(default=0.000975, ge=0)

    @property
    def secret(self) -> SecretStr | None:
        return self.token

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


class WaveSpeedSettings(KeyedSettings):
    base_url: str = "https://api.wavespeed.ai"


class SegmindSettings(KeyedSettings):
    base_url: str = "https://api.segmind.com"
    usd_per_image: float = Field(default=0.036, ge=0)
