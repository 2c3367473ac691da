"""Renderers with scripted behaviour for the engine-process tests; importing this loads no torch."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from engine.errors import NoFaceError
from engine.local.jobs import RenderCancelled, RenderedImage, RenderJob
from engine.local.settings import LocalSettings


class ScriptedRenderer:
    """Behaviour by prompt: "oom", "cuda", "crash", "boom", "no face", "slow" (stops when asked),
    "stuck" (ignores stop requests); anything else renders one tiny fake image per request image."""

    def render(
        self,
        job: RenderJob,
        on_progress: Callable[[float], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[RenderedImage]:
        if job.prompt == "oom":
            import torch

            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if job.prompt == "cuda":
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        if job.prompt == "crash":
            os._exit(3)
        if job.prompt == "boom":
            raise ValueError("something broke")
        if job.prompt == "no face":
            raise NoFaceError("no face detected in the photo")
        for step in range(1, job.steps + 1):
            if job.prompt in ("slow", "stuck"):
                time.sleep(0.05)
            if job.prompt != "stuck" and should_stop is not None and should_stop():
                raise RenderCancelled
            if on_progress is not None:
                on_progress(step / job.steps)
        return [RenderedImage(f"{os.getpid()}".encode(), "image/png", job.width, job.height)] * job.num_images


def scripted_renderer(settings: LocalSettings) -> ScriptedRenderer:
    return ScriptedRenderer()


def broken_renderer(settings: LocalSettings) -> ScriptedRenderer:
    raise FileNotFoundError(f"{settings.models_dir}/flux1-dev/transformer/config.json")
