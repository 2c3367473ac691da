"""Which backend runs a job: the route's preference order, filtered by capability, keys and circuits."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from engine.backend import Backend
from engine.budget import BudgetGuard
from engine.capabilities import Capabilities, Problem
from engine.catalogue import BACKEND_NAMES, CAPABILITIES
from engine.fleet import FleetView
from engine.gate import CircuitBreaker
from engine.request import GenerationRequest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Refusal:
    """Why no backend can take a request: the ranges it broke, or that nothing is available."""

    problems: tuple[Problem, ...]
    unavailable: tuple[str, ...]  # "name: reason" for backends without keys or with open circuits
    over_budget: bool = False  # the backends that could take it have spent their daily budgets


@dataclass(frozen=True)
class Plan:
    """The route a new job carries, and whether any live worker serves a backend of it yet."""

    route: tuple[str, ...]
    waiting: bool = False  # queued for a worker that is not up: it waits (within its deadline)


class Router:
    """Backends of this process in preference order (``route``), and — with a ``fleet`` — the routes of new
    jobs planned against the backends that live workers serve, wherever they run."""

    def __init__(
        self,
        backends: dict[str, Backend],
        route: Sequence[str],
        breakers: dict[str, CircuitBreaker],
        *,
        fleet: FleetView | None = None,
    ) -> None:
        self.backends = backends
        self.configured = list(route)  # the operator's preference order, served here or not
        self.route = [name for name in route if name in backends]
        self.breakers = breakers
        self.fleet = fleet
        # Set by the wiring where daily budgets apply: new jobs are refused when their whole route is over
        # budget, and a render starts on a backend only within its budget.
        self.budget: BudgetGuard | None = None

    def available(self) -> list[str]:
        """Backends of this process that can run a job now (installed, configured, circuit closed)."""
        return [name for name in self.backends if self._reason(name) is None]

    def capabilities(self, name: str) -> Capabilities:
        backend = self.backends.get(name)
        return backend.capabilities if backend is not None else CAPABILITIES[name]

    async def preferred(self) -> str | None:
        """The first backend of the preference order that is up (here or on a live worker): what a request
        renders on unless it asks for something that backend cannot do."""
        up = set(self.available())
        if self.fleet is not None:
            up |= await self.fleet.served()
            order = self.configured or [*self.route, *(name for name in BACKEND_NAMES if name in up)]
        else:
            order = self.route
        return next((name for name in order if name in up and (name in self.backends or name in CAPABILITIES)), None)

    async def plan(self, request: GenerationRequest) -> Plan | Refusal:
        """The route for a new job, or why no backend can take it (its backends over their budgets too)."""
        plan = await self._plan(request)
        if isinstance(plan, Plan) and self.budget is not None:
            affordable = await self.budget.open_for(plan.route or self.route, request)
            return plan if affordable else Refusal((), (), over_budget=True)
        return plan

    async def _plan(self, request: GenerationRequest) -> Plan | Refusal:
        """The route for a new job, or why no backend can take it.

        Without a fleet: this process's route, refused when none of its backends can serve the request now.
        With one: the preference order kept to the backends this process or a live worker serves; when none
        is up, the backends that could take the request, and the job waits for a worker."""
        if self.fleet is None:
            return self.refusal(request) or Plan(tuple(self.route))
        up = set(self.available()) | await self.fleet.served()
        order = self.configured or [*self.route, *(name for name in BACKEND_NAMES if name in up)]
        # A name this version does not know (a newer worker's) cannot be checked: it is left out.
        order = [name for name in dict.fromkeys(order) if name in self.backends or name in CAPABILITIES]
        live = [name for name in order if name in up]
        problems: list[Problem] = []
        for name in live or order:
            found = self.capabilities(name).check(name, request)
            if not found:
                fitting = live or [name for name in order if not self.capabilities(name).check(name, request)]
                return Plan(tuple(fitting), waiting=not live)
            problems.extend(found)
        if not order:
            return Plan((), waiting=True)  # no route configured and no worker yet: any worker may take it
        return Refusal(tuple(problems), ())

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
