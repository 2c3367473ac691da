"""Remote provider backends: one module per provider, all sharing the HTTP rules in ``http``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.capabilities import Choice


@dataclass(frozen=True)
class FreeText(Choice):
    """Any text up to ``max_length`` characters, such as a negative prompt."""

    options: tuple[Any, ...] = ()
    default: Any = None
    max_length: int = 2000

    def contains(self, value: Any) -> bool:
        return isinstance(value, str) and len(value) <= self.max_length
