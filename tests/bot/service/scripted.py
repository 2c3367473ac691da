"""A backend that renders as a test says: tiny images, a classified failure, or nothing until released."""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass, field

from PIL import Image

from engine.backend import GenerationResult, OutputImage, Progress, Stage
from engine.capabilities import Capabilities, Choice, Range, Text
from engine.errors import BackendError
from engine.request import GenerationRequest

NAME = "scripted"
CAPABILITIES = Capabilities(
    limits={
        "negative_prompt": Text(500),
        "width": Range(256, 1536, 896, integer=True),
        "height": Range(256, 1536, 1152, integer=True),
        "steps": Range(1, 50, 20, integer=True),
        "guidance": Range(1.0, 10.0, 4.0),
        "id_weight": Range(0.0, 1.5, 1.0),
        "seed": Range(0, 2**31 - 1, integer=True),
        "num_images": Range(1, 4, 1, integer=True),
        "output_format": Choice(("jpeg", "png", "webp"), "png"),
    },
    max_faces=4,
)


def tiny_png(width: int = 8, height: int = 8) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 200)).save(out, format="PNG")
    return out.getvalue()


@dataclass
class ScriptedBackend:
    """Records every request; ``fail`` raises a classified error, ``hold`` keeps the render waiting."""

    name: str = NAME
    capabilities: Capabilities = CAPABILITIES
    down: str | None = None  # why the backend is unavailable, as a missing key would say
    fail: BackendError | None = None
    seed: str = "4242"
    hold: asyncio.Event | None = None
    requests: list[GenerationRequest] = field(default_factory=list)
    rendering: asyncio.Event = field(default_factory=asyncio.Event)

    def unavailable_reason(self) -> str | None:
        return self.down

    async def generate(self, request: GenerationRequest, progress: Progress) -> GenerationResult:
        self.requests.append(request)
        await progress.update(Stage.RUNNING, fraction=0.5)
        self.rendering.set()
        if self.hold is not None:
            await self.hold.wait()
        if self.fail is not None:
            raise self.fail
        image = OutputImage(tiny_png(), "image/png", 8, 8)
        return GenerationResult(images=(image,) * request.num_images, seed=self.seed)
