"""ByteDance's ``flux-pulid`` model as Replicate and Segmind both serve it: one input schema, one mapping."""

from __future__ import annotations

from typing import Any

from engine.capabilities import Capabilities, Choice, Limit, Range, Text
from engine.providers.remote import value_or_default
from engine.request import GenerationRequest

# The parameter table both providers publish for this model (their pages agree on every range and on
# every default but id_weight's); each provider adds id_weight and how many images one call returns.
SHARED_LIMITS: dict[str, Limit] = {
    "negative_prompt": Text(),  # unset: the model's own negative prompt applies
    "width": Range(256, 1536, 896, integer=True),
    "height": Range(256, 1536, 1152, integer=True),
    "steps": Range(1, 20, 20, integer=True),
    "guidance": Range(1, 10, 4),
    "start_step": Range(0, 10, 0, integer=True),
    "true_cfg": Range(1, 10, 1),
    "seed": Range(0, 2**63 - 1, None, integer=True),
    "max_sequence_length": Range(128, 512, 128, integer=True),
    "output_format": Choice(("jpeg", "png", "webp"), "webp"),
    "output_quality": Range(1, 100, 80, integer=True),
}

_WIRE_FORMAT = {"jpeg": "jpg", "png": "png", "webp": "webp"}


def capabilities(*, id_weight: Range, num_images: Range) -> Capabilities:
    return Capabilities(limits={**SHARED_LIMITS, "id_weight": id_weight, "num_images": num_images}, max_faces=1)


def arguments(capabilities: Capabilities, request: GenerationRequest, *, face: str, num_outputs: int) -> dict[str, Any]:
    """The model's input for ``request``; ``face`` is the photo as a URL or data URI."""

    def value(name: str) -> Any:
        return value_or_default(capabilities, request, name)

    args: dict[str, Any] = {
        "main_face_image": face,
        "prompt": request.prompt,
        "width": int(value("width")),
        "height": int(value("height")),
        "num_steps": int(value("steps")),
        "start_step": int(value("start_step")),
        "guidance_scale": float(value("guidance")),
        "id_weight": float(value("id_weight")),
        "true_cfg": float(value("true_cfg")),
        "max_sequence_length": int(value("max_sequence_length")),
        "num_outputs": num_outputs,
        "output_format": _WIRE_FORMAT[value("output_format")],
        "output_quality": int(value("output_quality")),
    }
    if request.negative_prompt is not None:
        args["negative_prompt"] = request.negative_prompt
    if request.seed is not None:
        args["seed"] = request.seed
    return args
