"""Settings of the output safety check (composed into the application settings as ``LIKENESS_SAFETY__*``)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

# The job parameter naming the policy of the chat or server a job came from (the setting where it has none).
POLICY_PARAM = "safety_policy"


class SafetyPolicy(StrEnum):
    BLOCK = "block"  # not delivered, the job refunded, and the user told why
    SPOILER = "spoiler"  # delivered behind the platform's spoiler
    ALLOW = "allow"  # delivered as it is


class SafetySettings(BaseModel):
    """The global default policy (servers and chats may override it) and the classifier's threshold.

    ``model_dir`` None means ``<models dir>/safety/nsfw_image_detection``, decided by the caller.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    policy: SafetyPolicy = SafetyPolicy.BLOCK
    threshold: float = Field(0.5, ge=0.0, le=1.0, description="probability of the unsafe labels that flags an image")
    unsafe_labels: tuple[str, ...] = Field(("nsfw",), min_length=1, description="the model's labels that are unsafe")
    model_dir: Path | None = None
    device: str = "cpu"
    # Discord channels marked age-restricted deliver flagged outputs as they are, whatever the policy.
    nsfw_channels_allow: bool = True
