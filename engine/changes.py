"""What rendering on a backend changes of what the user asked for: the model family, the reference photos
used, a size brought into the backend's range. The user is told each one, or with ``strict`` refused."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from engine.capabilities import Capabilities, Range
from engine.request import GenerationRequest

SIZE_MULTIPLE = 16  # every backend takes sizes in multiples of 16
# Kept in a job's parameters (backends read only the request's own fields): the changes its status tells, and
# whether its user asked for none (a re-run asks the same).
CHANGES_PARAM = "changes"
STRICT_PARAM = "strict"
# Backends by the model they run; the rest run FLUX.
FAMILIES = {"fal-pulid": "SDXL"}
DEFAULT_FAMILY = "FLUX"


def family(backend: str) -> str:
    return FAMILIES.get(backend, DEFAULT_FAMILY)


class ChangeKind(StrEnum):
    FAMILY = "family"  # another model than the preferred backend's, for a parameter it cannot take
    FACES = "faces"  # fewer reference photos than the face has
    SIZE = "size"  # the size scaled into the backend's range, keeping the aspect


@dataclass(frozen=True)
class Change:
    kind: ChangeKind
    backend: str  # the backend that renders with the change
    asked: str  # what was asked: "FLUX", "3", "2048x512"
    given: str  # what is rendered: "SDXL", "1", "1536x384"
    reason: str = ""  # FAMILY: the parameter the preferred backend cannot take

    def to_json(self) -> dict[str, str]:
        return {
            "kind": str(self.kind),
            "backend": self.backend,
            "asked": self.asked,
            "given": self.given,
            "reason": self.reason,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Change:
        return cls(
            ChangeKind(data["kind"]),
            str(data["backend"]),
            str(data["asked"]),
            str(data["given"]),
            str(data.get("reason", "")),
        )


def fitted_size(request: GenerationRequest, capabilities: Capabilities) -> tuple[int, int] | None:
    """The request's size scaled into the backend's width and height ranges with its aspect kept, when the
    size is outside them; None when it fits already (or the backend takes any size)."""
    width_range, height_range = capabilities.limits.get("width"), capabilities.limits.get("height")
    if request.width is None or request.height is None:
        return None
    if not isinstance(width_range, Range) or not isinstance(height_range, Range):
        return None
    if width_range.contains(request.width) and height_range.contains(request.height):
        return None
    width, height = float(request.width), float(request.height)
    scale = min(width_range.high / width, height_range.high / height, 1.0)
    scale = max(scale, width_range.low / width, height_range.low / height)
    fitted = (_multiple(width * scale, width_range), _multiple(height * scale, height_range))
    if not (width_range.contains(fitted[0]) and height_range.contains(fitted[1])):
        return None  # too long and thin for this backend at any scale
    return fitted


def _multiple(value: float, limit: Range) -> int:
    low = int(-(-limit.low // SIZE_MULTIPLE) * SIZE_MULTIPLE)
    high = int(limit.high // SIZE_MULTIPLE * SIZE_MULTIPLE)
    return max(low, min(high, round(value / SIZE_MULTIPLE) * SIZE_MULTIPLE))


def size_change(
    request: GenerationRequest, backend: str, capabilities: Capabilities
) -> tuple[GenerationRequest, Change] | None:
    """The request brought into the preferred backend's size range, when only its size keeps that backend
    from rendering it; None otherwise."""
    fitted = fitted_size(request, capabilities)
    if fitted is None:
        return None
    resized = replace(request, width=fitted[0], height=fitted[1])
    if capabilities.check(backend, resized):
        return None  # something else keeps it off this backend too: sizing down would not bring it back
    change = Change(ChangeKind.SIZE, backend, f"{request.width}x{request.height}", f"{fitted[0]}x{fitted[1]}")
    return resized, change


def changes(
    request: GenerationRequest,
    *,
    preferred: str | None,
    chosen: str,
    capabilities: Callable[[str], Capabilities],
    faces: int | None = None,
) -> tuple[Change, ...]:
    """What rendering ``request`` on ``chosen`` changes against the ``preferred`` backend and the request:
    the model family, and how many of the face's ``faces`` photos are used."""
    found: list[Change] = []
    if preferred is not None and family(chosen) != family(preferred):
        problems = capabilities(preferred).check(preferred, request)
        reason = problems[0].parameter if problems else ""
        found.append(Change(ChangeKind.FAMILY, chosen, family(preferred), family(chosen), reason))
    photos = len(request.faces) if faces is None else faces
    used = min(photos, capabilities(chosen).max_faces)
    if used < photos:
        found.append(Change(ChangeKind.FACES, chosen, str(photos), str(used)))
    return tuple(found)


def job_changes(params: dict[str, Any]) -> tuple[Change, ...]:
    """The changes a job's parameters record (none for a job queued without any, or unreadable ones)."""
    try:
        return tuple(Change.from_json(item) for item in params.get(CHANGES_PARAM) or ())
    except (KeyError, ValueError, TypeError, AttributeError):
        return ()
