"""A backend that renders instantly, so a benchmark measures the service and not a model."""

from __future__ import annotations

import io

from PIL import Image

from engine.backend import GenerationResult, OutputImage, Progress
from engine.capabilities import Capabilities, Range, Text
from engine.request import GenerationRequest


def _tiny_png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 64), "teal").save(out, format="PNG")
    return out.getvalue()


class InstantBackend:
    name = "fal-flux-pulid"  # poses as a real backend name so routes and metrics look as in production
    capabilities = Capabilities(
        limits={
            "seed": Range(0, 2**32, None, integer=True),
            "num_images": Range(1, 4, 1, integer=True),
            "width": Range(256, 2048, 1024, integer=True),
            "height": Range(256, 2048, 1024, integer=True),
            "steps": Range(1, 50, 20, integer=True),
            "negative_prompt": Text(),
        },
        max_faces=4,
    )

    def __init__(self) -> None:
        self.image = _tiny_png()
        self.calls = 0

    def unavailable_reason(self) -> str | None:
        return None

    async def generate(self, request: GenerationRequest, progress: Progress) -> GenerationResult:
        self.calls += 1
        images = tuple(OutputImage(self.image, "image/png", 64, 64) for _ in range(request.num_images))
        return GenerationResult(images, seed=str(request.seed or 0), spend_usd=0.0)
