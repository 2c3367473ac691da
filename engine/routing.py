"""Which backend runs a job: the route's preference order, filtered by capability, keys and circuits."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from engine.backend import Backend
from engine.capabilities import Problem
from engine.request import GenerationRequest

log = logging.getLogger(__name__)


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Opens after ``threshold`` consecutive failures; after ``cooldown`` lets one trial through."""

    def __init__(self, threshold: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self.clock = clock
        self.failures = 0
        self.opened_at: float | None = None
        self.open_for = cooldown_s
        self.trial_running = False

    @property
    def state(self) -> BreakerState:
        if self.opened_at is None:
            return BreakerState.CLOSED
        if self.clock() - self.opened_at >= self.open_for:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def allows(self) -> bool:
        state = self.state
        return state is BreakerState.CLOSED or (state is BreakerState.HALF_OPEN and not self.trial_running)

    def begin(self) -> None:
        if self.state is BreakerState.HALF_OPEN:
            self.trial_running = True

    def success(self) -> None:
        self.failures, self.opened_at, self.trial_running = 0, None, False

    def failure(self) -> None:
        self.failures += 1
        self.trial_running = False
        if self.failures >= self.threshold or self.opened_at is not None:
            self.open(self.cooldown_s)

    def open(self, seconds: float) -> None:
        self.opened_at, self.open_for, self.trial_running = self.clock(), seconds, False


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
