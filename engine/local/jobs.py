"""What the backend sends to the engine process and what comes back; plain values, no torch."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RenderJob:
    """A fully resolved request: every parameter has its value (defaults already applied)."""

    prompt: str
    faces: tuple[bytes, ...] = field(repr=False)
    width: int
    height: int
    steps: int
    guidance: float
    id_weight: float
    start_step: int
    true_cfg: float
    seed: int
    num_images: int = 1
    negative_prompt: str | None = None
    output_format: str = "jpeg"
    output_quality: int = 95
    max_sequence_length: int = 128


@dataclass(frozen=True)
class RenderedImage:
    data: bytes = field(repr=False)
    content_type: str
    width: int
    height: int


class RenderCancelled(Exception):
    """The render was asked to stop between two denoising steps."""
