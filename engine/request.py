"""The neutral generation request every backend maps to its own wire format."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

OUTPUT_FORMATS = ("jpeg", "png", "webp")


@dataclass(frozen=True)
class GenerationRequest:
    """What the user asked for.

    Optional parameters left as ``None`` take the chosen backend's documented default; only values the
    user set explicitly are checked against a backend's ranges when routing.
    """

    prompt: str
    faces: tuple[bytes, ...] = field(repr=False)
    negative_prompt: str | None = None
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    guidance: float | None = None
    id_weight: float | None = None
    start_step: int | None = None
    true_cfg: float | None = None
    seed: int | None = None
    num_images: int = 1
    output_format: str | None = None
    output_quality: int | None = None
    max_sequence_length: int | None = None
    safety_checker: bool | None = None
    mode: str | None = None

    def explicit(self) -> dict[str, Any]:
        """The tunable parameters the user set, by name (prompt and faces excluded)."""
        skip = {"prompt", "faces"}
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in skip and getattr(self, f.name) is not None
        }

    def with_faces(self, faces: tuple[bytes, ...]) -> GenerationRequest:
        return replace(self, faces=faces)

    def to_params(self) -> dict[str, Any]:
        """JSON-safe parameters (faces are stored separately, as blobs)."""
        params = self.explicit()
        params["prompt"] = self.prompt
        params["num_images"] = self.num_images
        return params

    @classmethod
    def from_params(cls, params: dict[str, Any], faces: tuple[bytes, ...]) -> GenerationRequest:
        known = {f.name for f in fields(cls)} - {"faces"}
        return cls(faces=faces, **{k: v for k, v in params.items() if k in known})


ASPECT_AREA = 1024 * 1024  # the megapixel FLUX is trained around
MAX_ASPECT = 4.0


def size_for_aspect(aspect: str) -> tuple[int, int] | None:
    """Width and height (multiples of 16, about one megapixel) for an aspect such as "3:4"; None if the
    text is not a ratio between 1:4 and 4:1."""
    left, sep, right = aspect.strip().partition(":")
    try:
        w_ratio, h_ratio = float(left), float(right)
    except ValueError:
        return None
    if not sep or w_ratio <= 0 or h_ratio <= 0 or not 1 / MAX_ASPECT <= w_ratio / h_ratio <= MAX_ASPECT:
        return None
    height = (ASPECT_AREA * h_ratio / w_ratio) ** 0.5
    width = height * w_ratio / h_ratio
    return int(round(width / 16) * 16), int(round(height / 16) * 16)
