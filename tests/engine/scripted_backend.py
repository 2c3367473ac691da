"""A backend that follows a script, for tests that count submits and resumes without a provider fake.

It keeps the contract a remote backend keeps (``engine.providers.remote``): a try without ``progress.resume``
announces its submit through ``progress.submitting``, submits a new request and reports its id through
``progress.submitted`` before waiting on it; a try with ``progress.resume`` waits on that request instead.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from enum import StrEnum

from PIL import Image

from engine.backend import GenerationResult, OutputImage, Progress, ProviderRef
from engine.capabilities import Capabilities, Range
from engine.request import GenerationRequest


class At(StrEnum):
    PREPARE = "prepare"  # preparing the request fails (a face upload, a missing key): nothing is sent
    SUBMIT = "submit"  # the provider refuses the submit: no request exists
    WAIT = "wait"  # the provider took the request; polling, fetching or downloading it fails


@dataclass(frozen=True)
class Step:
    """What one call of ``generate`` does: finish, or raise ``error`` at ``at``."""

    error: BaseException | None = None
    at: At = At.WAIT


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), "olive").save(out, format="PNG")
    return out.getvalue()


@dataclass
class ScriptedBackend:
    name: str = "scripted"
    script: list[Step] = field(default_factory=list)  # one step per call; past its end every call finishes
    capabilities: Capabilities = field(
        default_factory=lambda: Capabilities(limits={"num_images": Range(1, 4, 1, integer=True)})
    )
    submitted: list[str] = field(default_factory=list)  # request ids the provider accepted, in order
    refused: int = 0  # submits the provider refused
    resumed: list[str] = field(default_factory=list)  # request ids a later try waited on again

    def unavailable_reason(self) -> str | None:
        return None

    async def generate(self, request: GenerationRequest, progress: Progress) -> GenerationResult:
        step = self.script.pop(0) if self.script else Step()
        ref = progress.resume
        if ref is None:
            if step.error is not None and step.at is At.PREPARE:
                raise step.error
            await progress.submitting()
            if step.error is not None and step.at is At.SUBMIT:
                self.refused += 1
                raise step.error
            ref = ProviderRef(self.name, f"{self.name}-{len(self.submitted) + 1}")
            self.submitted.append(ref.request_id)
            await progress.submitted(ref)
        else:
            self.resumed.append(ref.request_id)
        if step.error is not None and step.at is At.WAIT:
            raise step.error
        return GenerationResult((OutputImage(_png(), "image/png", 8, 8),), seed=ref.request_id, spend_usd=0.01)
