"""What each backend can render: documented ranges and defaults, and checking a request against them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.request import GenerationRequest


@dataclass(frozen=True)
class Range:
    """An inclusive numeric range with the backend's default."""

    low: float
    high: float
    default: float | None = None
    integer: bool = False

    def contains(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.integer and int(value) != value:
            return False
        return self.low <= value <= self.high


@dataclass(frozen=True)
class Choice:
    """One of a fixed set of values."""

    options: tuple[Any, ...]
    default: Any = None

    def contains(self, value: Any) -> bool:
        return value in self.options


@dataclass(frozen=True)
class Text:
    """Free text up to ``max_length`` characters, such as a negative prompt."""

    max_length: int = 2000
    default: str | None = None

    def contains(self, value: Any) -> bool:
        return isinstance(value, str) and len(value) <= self.max_length


Limit = Range | Choice | Text


@dataclass(frozen=True)
class Problem:
    """One parameter a backend cannot accept, with what it does accept."""

    backend: str
    parameter: str
    value: Any
    allowed: Limit | None  # None: the backend does not take this parameter at all


@dataclass(frozen=True)
class Capabilities:
    """Parameters a backend accepts. Parameters absent from ``limits`` are not supported."""

    limits: dict[str, Limit] = field(default_factory=dict)
    max_faces: int = 1

    def check(self, backend: str, request: GenerationRequest) -> list[Problem]:
        """Problems with the parameters the user set explicitly; empty when the backend can serve it."""
        problems: list[Problem] = []
        for name, value in request.explicit().items():
            limit = self.limits.get(name)
            if limit is None:
                problems.append(Problem(backend, name, value, None))
            elif not limit.contains(value):
                problems.append(Problem(backend, name, value, limit))
        return problems

    def default(self, name: str) -> Any:
        limit = self.limits.get(name)
        return None if limit is None else limit.default
