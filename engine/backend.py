"""The Backend protocol: anything that turns a GenerationRequest into images."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from engine.capabilities import Capabilities
from engine.request import GenerationRequest


class Stage(StrEnum):
    QUEUED = "queued"  # waiting in the backend's own queue (position may be known)
    RUNNING = "running"  # rendering


@dataclass(frozen=True)
class ProviderRef:
    """What a backend needs to find a submitted request again after a restart."""

    backend: str
    request_id: str
    urls: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"backend": self.backend, "request_id": self.request_id, "urls": dict(self.urls)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProviderRef:
        return cls(str(data["backend"]), str(data["request_id"]), dict(data.get("urls") or {}))


@dataclass(frozen=True)
class OutputImage:
    data: bytes = field(repr=False)
    content_type: str
    width: int
    height: int
    nsfw: bool = False
    likeness: float | None = None  # the face judge's score against the job's identity, when it was scored
    judge: str | None = None  # the judge that scored it


@dataclass(frozen=True)
class GenerationResult:
    images: tuple[OutputImage, ...]
    seed: str | None = None  # fal seeds can exceed 2**63: kept as text
    spend_usd: float = 0.0


class Progress(Protocol):
    """How a backend reports to the dispatcher while it works."""

    @property
    def resume(self) -> ProviderRef | None:
        """A request already submitted for this job on this backend (by an earlier try or an earlier
        attempt): poll it instead of submitting again."""

    @property
    def abandoned(self) -> bool:
        """True when this process drops the job without cancelling it (shutdown, lost lease): leave the
        provider's request running, another process resumes it. Otherwise a cancelled ``generate`` cancels
        the request at the provider."""

    async def submitting(self) -> None:
        """Record that a submit is about to be sent, before sending it: until ``submitted`` stores its request
        id, its outcome is unknown. Raises UnknownOutcomeError when an earlier attempt of the job sent one to
        this backend and stopped (its process died) before storing the answer: the provider may hold and bill
        that request, so it is never sent again."""

    async def submitted(self, ref: ProviderRef) -> None:
        """Record the provider's request id, in the database and for this process's later tries; must be
        awaited before waiting on the provider."""

    async def update(self, stage: Stage, *, queue_position: int | None = None, fraction: float | None = None) -> None:
        """Report the backend's queue position or rendering progress (latest value wins)."""


class Backend(Protocol):
    """A provider or the local engine.

    ``generate`` raises the errors in ``engine.errors``; cancelling its task must cancel the work at the
    provider where the provider supports it.
    """

    name: str
    capabilities: Capabilities

    def unavailable_reason(self) -> str | None:
        """Why this backend cannot run now (for example no API key), or None when it can."""

    async def generate(self, request: GenerationRequest, progress: Progress) -> GenerationResult: ...
