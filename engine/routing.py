"""Which backend runs a job: the route's preference order, filtered by capability, keys and circuits."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from engine.backend import Backend
from engine.capabilities import Problem
from engine.gate import CircuitBreaker
from engine.request import GenerationRequest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Refusal:
    """Why no backend can take a request: the ranges it broke, or that nothing is available."""

    problems: tuple[Problem, ...]
    unavailable: tuple[str, ...]  # "name: reason" for backends without keys or with open circuits


class Router:
    def __init__(
        self,
        backends: dict[str, Backend],
        route: Sequence[str],
        breakers: dict[str, CircuitBreaker],
    ) -> None:
        self.backends = backends
        self.route = [name for name in route if name in backends]
        self.breakers = breakers

    def _reason(self, name: str) -> str | None:
        backend = self.backends.get(name)
        if backend is None:
            return "not installed here"
        reason = backend.unavailable_reason()
        if reason:
            return reason
        breaker = self.breakers.get(name)
        if breaker is not None and not breaker.allows():
            return "temporarily failing"
        return None

    def candidates(self, request: GenerationRequest, route: Iterable[str] | None = None) -> list[Backend]:
        """Backends that can serve the request now, in preference order."""
        names = list(route) if route else self.route
        return [
            self.backends[name]
            for name in names
            if self._reason(name) is None and not self.backends[name].capabilities.check(name, request)
        ]

    def refusal(self, request: GenerationRequest, route: Iterable[str] | None = None) -> Refusal | None:
        """None when some backend of the route can serve the request, else why not."""
        names = list(route) if route else self.route
        problems: list[Problem] = []
        unavailable: list[str] = []
        for name in names:
            reason = self._reason(name)
            if reason:
                unavailable.append(f"{name}: {reason}")
                continue
            found = self.backends[name].capabilities.check(name, request)
            if not found:
                return None
            problems.extend(found)
        return Refusal(tuple(problems), tuple(unavailable))
