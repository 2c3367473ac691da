"""The local PuLID-FLUX backend: validates a request, renders it in the engine process, returns images."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.backend import GenerationResult, OutputImage, Progress, Stage
from engine.capabilities import Capabilities, Choice, Range, Text
from engine.errors import InvalidInputError
from engine.local import weights
from engine.local.jobs import RenderJob
from engine.local.settings import LocalSettings
from engine.local.worker import EngineProcess, RendererFactory, default_renderer
from engine.request import OUTPUT_FORMATS, GenerationRequest

logger = logging.getLogger(__name__)

SIZE_MULTIPLE = 16
MAX_FACES = 4
MAX_IMAGES = 4
WEIGHTS_RECHECK_S = 30.0


CAPABILITIES = Capabilities(
    limits={
        "negative_prompt": Text(max_length=2000),
        # FLUX.1-dev is trained up to about 2 megapixels; PuLID's defaults are 896x1152. Sizes must also
        # be multiples of 16 (checked in resolve).
        "width": Range(256, 2048, 896, integer=True),
        "height": Range(256, 2048, 1152, integer=True),
        "steps": Range(1, 50, 28, integer=True),
        "guidance": Range(1.0, 10.0, 4.0),
        "id_weight": Range(0.0, 3.0, 1.0),
        "start_step": Range(0, 50, 0, integer=True),
        "true_cfg": Range(1.0, 10.0, 1.0),
        "seed": Range(0, 2**32 - 1, None, integer=True),
        "num_images": Range(1, MAX_IMAGES, 1, integer=True),
        "output_format": Choice(OUTPUT_FORMATS, "jpeg"),
        "output_quality": Range(1, 100, 95, integer=True),
        "max_sequence_length": Range(16, 512, 128, integer=True),
    },
    max_faces=MAX_FACES,
)


def _default(name: str) -> Any:
    return CAPABILITIES.default(name)


class LocalBackend:
    """PuLID-FLUX on this machine's GPU; the models load in a child process on the first job.

    ``renderer_factory`` (a module-level function, run in the child) and ``weights_check`` are the seams
    tests use to run the real process with tiny models: see tests/engine/local/tiny.py.
    """

    name = "local"
    capabilities = CAPABILITIES

    def __init__(
        self,
        settings: LocalSettings,
        *,
        renderer_factory: RendererFactory = default_renderer,
        weights_check: Callable[[Path], list[weights.Problem]] = weights.check,
    ) -> None:
        self.settings = settings
        self._weights_check = weights_check
        self._process = EngineProcess(settings, renderer_factory)
        self._weights_ok_at: float | None = None

    def unavailable_reason(self) -> str | None:
        if not self.settings.enabled:
            return "the local engine is disabled"
        if self.settings.models_dir is None:
            return "no models directory is configured for the local engine"
        if self._process.startup_error is not None:
            return f"the local engine failed to load: {self._process.startup_error}"
        now = time.monotonic()
        if self._weights_ok_at is None or now - self._weights_ok_at > WEIGHTS_RECHECK_S:
            problems = self._weights_check(self.settings.models_dir)
            if problems:
                first = problems[0]
                more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
                return f"model file {first.reason}: {first.path}{more}; run `likeness models download`"
            self._weights_ok_at = now
        return None

    def resolve(self, request: GenerationRequest) -> RenderJob:
        """The request with every default applied; InvalidInputError if this backend cannot serve it."""
        problems = self.capabilities.check(self.name, request)
        if problems:
            names = ", ".join(sorted({p.parameter for p in problems}))
            raise InvalidInputError(f"parameters outside the local engine's ranges: {names}")
        if not 1 <= len(request.faces) <= MAX_FACES:
            raise InvalidInputError(f"the local engine takes 1 to {MAX_FACES} face photos")
        width = int(request.width if request.width is not None else _default("width"))
        height = int(request.height if request.height is not None else _default("height"))
        if width % SIZE_MULTIPLE or height % SIZE_MULTIPLE:
            raise InvalidInputError(f"width and height must be multiples of {SIZE_MULTIPLE}")
        steps = int(request.steps if request.steps is not None else _default("steps"))
        return RenderJob(
            prompt=request.prompt,
            faces=request.faces,
            width=width,
            height=height,
            steps=steps,
            guidance=float(request.guidance if request.guidance is not None else _default("guidance")),
            id_weight=float(request.id_weight if request.id_weight is not None else _default("id_weight")),
            start_step=int(request.start_step if request.start_step is not None else _default("start_step")),
            true_cfg=float(request.true_cfg if request.true_cfg is not None else _default("true_cfg")),
            seed=int(request.seed if request.seed is not None else secrets.randbelow(2**32)),
            num_images=request.num_images,
            negative_prompt=request.negative_prompt,
            output_format=request.output_format or _default("output_format"),
            output_quality=int(request.output_quality or _default("output_quality")),
            max_sequence_length=int(
                request.max_sequence_length or self.settings.max_sequence_length or _default("max_sequence_length")
            ),
        )

    async def generate(self, request: GenerationRequest, progress: Progress) -> GenerationResult:
        job = self.resolve(request)
        if self._process.busy:
            await progress.update(Stage.QUEUED)

        async def on_progress(fraction: float) -> None:
            await progress.update(Stage.RUNNING, fraction=fraction)

        images = await self._process.render(job, on_progress)
        return GenerationResult(
            images=tuple(OutputImage(i.data, i.content_type, i.width, i.height) for i in images),
            seed=str(job.seed),
        )

    async def close(self) -> None:
        """Stop the engine process (frees the GPU)."""
        await self._process.close()
