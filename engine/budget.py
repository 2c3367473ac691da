"""Daily provider budgets: the estimate of a job's cost, the hold it takes before starting, and the alerts.

A job starts on a backend only after it holds its estimated cost against that backend's budget and the
total (``storage.budget.hold``); a backend over budget is failed over like one that is down, and a job no
backend can afford fails uncharged. The estimate comes from each provider's documented price; the spend
recorded when the job ends is the provider's own figure where it reports one, and the gap is a metric.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic import BaseModel, Field, field_validator

from engine.capabilities import Capabilities
from engine.catalogue import BACKEND_NAMES, CAPABILITIES, LOCAL, PROVIDER_CLASSES
from engine.clock import SYSTEM_CLOCK, Clock
from engine.errors import BackendError, FailureKind
from engine.providers import fal, wavespeed
from engine.providers.fal import FalQueueBackend
from engine.providers.replicate import ReplicateFluxPulidBackend
from engine.providers.segmind import SegmindFluxPulidBackend
from engine.providers.wavespeed import WaveSpeedFluxPulidBackend
from engine.request import GenerationRequest
from storage import budget
from storage.budget import TOTAL, HoldOutcome, Use
from storage.db import Database

log = logging.getLogger(__name__)

THRESHOLDS = (80, 100)  # percent of a budget at which the admins are told, once per budget and UTC day


class BudgetSettings(BaseModel):
    daily_usd: dict[str, float] = Field(
        default_factory=dict,
        description='USD per UTC day, per backend name and "total" (JSON); a backend not named has no budget',
    )

    @field_validator("daily_usd")
    @classmethod
    def _known_budgets(cls, value: dict[str, float]) -> dict[str, float]:
        for name, usd in value.items():
            if name != TOTAL and name not in BACKEND_NAMES:
                raise ValueError(f"unknown backend {name!r}; known: {', '.join(BACKEND_NAMES)} and {TOTAL!r}")
            if usd < 0:
                raise ValueError(f"the budget of {name} must not be negative")
        return value


class OverBudgetError(BackendError):
    """Starting the job on this backend would pass a daily budget."""

    kind = FailureKind.OVER_BUDGET


@dataclass(frozen=True)
class PerMegapixel:
    """Billed by output area (fal)."""

    usd: float

    def estimate(self, request: GenerationRequest, capabilities: Capabilities) -> float:
        width = request.width or capabilities.default("width") or 1024
        height = request.height or capabilities.default("height") or 1024
        return self.usd * float(width) * float(height) / 1_000_000 * request.num_images


@dataclass(frozen=True)
class PerImage:
    """A fixed price per image (WaveSpeed, Segmind); zero for the operator's own GPU."""

    usd: float

    def estimate(self, request: GenerationRequest, capabilities: Capabilities) -> float:
        return self.usd * request.num_images


@dataclass(frozen=True)
class PerGpuSecond:
    """Billed by GPU time (Replicate): the rate times the GPU seconds an image takes, measured as jobs end;
    ``seconds`` is the guess until the first one has."""

    usd_per_s: float
    seconds: float

    def estimate(self, request: GenerationRequest, capabilities: Capabilities) -> float:
        return self.usd_per_s * self.seconds * request.num_images


Price = PerMegapixel | PerImage | PerGpuSecond


class Estimator:
    """A job's expected cost on a backend, from the backend's price; GPU-time prices learn their mean."""

    def __init__(self, prices: Mapping[str, Price]) -> None:
        self.prices = dict(prices)
        self._measured: dict[str, tuple[int, float]] = {}  # backend -> (images, GPU seconds) of ended jobs

    def estimate(self, backend: str, request: GenerationRequest) -> float:
        price = self.prices.get(backend)
        if price is None:
            return 0.0
        if isinstance(price, PerGpuSecond):
            images, seconds = self._measured.get(backend, (0, 0.0))
            if images:
                price = PerGpuSecond(price.usd_per_s, seconds / images)
        return round(price.estimate(request, CAPABILITIES.get(backend, Capabilities())), 6)

    def measured(self, backend: str, images: int, actual_usd: float) -> None:
        """A job ended with the provider's own cost: a GPU-time price's mean moves towards it."""
        price = self.prices.get(backend)
        if not isinstance(price, PerGpuSecond) or price.usd_per_s <= 0 or images <= 0:
            return
        count, seconds = self._measured.get(backend, (0, 0.0))
        self._measured[backend] = (count + images, seconds + actual_usd / price.usd_per_s)


# Replicate bills FLUX PuLID by GPU time; until a job has measured it, an image is taken to need this long.
REPLICATE_GUESS_S = 30.0


def default_prices(*, replicate_usd_per_s: float, segmind_usd_per_image: float) -> dict[str, Price]:
    """Each backend's price as its provider documents it (the configurable ones from the settings)."""
    prices: dict[str, Price] = {}
    for cls in PROVIDER_CLASSES:
        if issubclass(cls, FalQueueBackend):
            prices[cls.name] = PerMegapixel(fal.USD_PER_MEGAPIXEL)
        elif issubclass(cls, ReplicateFluxPulidBackend):
            prices[cls.name] = PerGpuSecond(replicate_usd_per_s, REPLICATE_GUESS_S)
        elif issubclass(cls, WaveSpeedFluxPulidBackend):
            prices[cls.name] = PerImage(wavespeed.USD_PER_IMAGE)
        elif issubclass(cls, SegmindFluxPulidBackend):
            prices[cls.name] = PerImage(segmind_usd_per_image)
    prices[LOCAL] = PerImage(0.0)  # the operator's own GPU: no per-job bill
    return prices


class BudgetMetrics(Protocol):
    def estimate_error(self, backend: str, usd: float) -> None: ...
    def observe(self, uses: list[Use] | None) -> None: ...


class _NoMetrics:
    def estimate_error(self, backend: str, usd: float) -> None:
        pass

    def observe(self, uses: list[Use] | None) -> None:
        pass


# A job's recorded spend minus its estimate, USD: most land within a cent either way.
ESTIMATE_ERROR_BUCKETS = (-0.1, -0.03, -0.01, -0.003, -0.001, 0.0, 0.001, 0.003, 0.01, 0.03, 0.1)


class BudgetGauges(Collector):
    """The estimate error per backend, and today's use of each budget as of the last ``observe``, on the
    process's metrics registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._error = Histogram(
            "likeness_spend_estimate_error_usd",
            "A job's recorded spend minus the estimate it started with (USD), per backend.",
            ["backend"],
            buckets=ESTIMATE_ERROR_BUCKETS,
            registry=registry,
        )
        self.uses: list[Use] | None = None
        registry.register(self)

    def estimate_error(self, backend: str, usd: float) -> None:
        self._error.labels(backend=backend).observe(usd)

    def observe(self, uses: list[Use] | None) -> None:
        """Today's use, read from the database; None when it could not be read (no stale numbers shown)."""
        self.uses = uses

    def collect(self) -> Iterator[Metric]:
        spent = GaugeMetricFamily("likeness_budget_spent_usd", "Spend recorded today (UTC).", labels=["budget"])
        held = GaugeMetricFamily(
            "likeness_budget_held_usd", "Estimated cost of running jobs held against a budget.", labels=["budget"]
        )
        limit = GaugeMetricFamily("likeness_budget_limit_usd", "The daily budget, where one is set.", labels=["budget"])
        used = GaugeMetricFamily(
            "likeness_budget_used_ratio", "Spend and holds today over the daily budget (1: reached).", labels=["budget"]
        )
        for use in self.uses or []:
            spent.add_metric([use.budget], use.spent_usd)
            held.add_metric([use.budget], use.held_usd)
            if use.limit_usd is not None and use.share is not None:
                limit.add_metric([use.budget], use.limit_usd)
                used.add_metric([use.budget], min(use.share, 1e9))
        yield from (spent, held, limit, used)

    def describe(self) -> Iterator[Metric]:
        # Without describe the registry would call collect at registration to learn the names.
        return iter(())


class BudgetGuard:
    """Holds a job's estimate against the budgets before it starts on a backend, and records the alerts.

    Without any budget configured it only estimates (for the estimate-error metric) and allows everything.
    """

    def __init__(
        self,
        db: Database,
        limits: Mapping[str, float],
        estimator: Estimator,
        *,
        clock: Clock = SYSTEM_CLOCK,
        metrics: BudgetMetrics | None = None,
    ) -> None:
        self.db, self.limits, self.estimator, self.clock = db, dict(limits), estimator, clock
        self.metrics: BudgetMetrics = metrics or _NoMetrics()
        self._estimates: dict[tuple[str, str], float] = {}  # (job, backend) -> the estimate it started with

    def limited(self, backend: str) -> bool:
        return backend in self.limits or TOTAL in self.limits

    async def hold(self, job_id: str, backend: str, request: GenerationRequest) -> bool:
        """Take the job's hold on the backend's budget; False when that would pass a budget (told to the
        admins as that budget reached)."""
        estimate = self.estimator.estimate(backend, request)
        self._estimates[(job_id, backend)] = estimate
        if not self.limited(backend):
            return True
        now = self.clock.time()
        outcome: HoldOutcome = await self.db.write(
            budget.hold, job_id=job_id, backend=backend, estimate_usd=estimate, limits=self.limits, now=now
        )
        await self._note_thresholds(outcome)
        if not outcome.granted:
            log.warning(
                "%s budget would be passed by $%.4f on %s: not started there",
                outcome.refused_by,
                estimate,
                backend,
                extra={"job_id": job_id},
            )
        return outcome.granted

    async def open_for(self, route: Iterable[str], request: GenerationRequest) -> bool:
        """Whether some backend of the route could take the request within its budgets now: with none, a new
        job is refused before it is charged, and the budgets that refused it count as reached."""
        names = list(route)
        if not self.limits or not names:
            return True
        now = self.clock.time()
        spent: dict[str, Use] = {}
        for name in names:
            if not self.limited(name):
                return True
            own, total = await self.db.read(budget.usage, backend=name, now=now)
            estimate = self.estimator.estimate(name, request)
            over = [
                Use(use.budget, use.spent_usd, use.held_usd, self.limits[use.budget])
                for use in (own, total)
                if use.budget in self.limits and use.used_usd + estimate > self.limits[use.budget] + 1e-9
            ]
            if not over:
                return True
            spent.update((use.budget, use) for use in over)
        for use in spent.values():
            await self._reached(use, 100, now)
        return False

    def settled(self, job_id: str, backend: str, images: int, actual_usd: float) -> None:
        """The job ended on ``backend`` costing ``actual_usd``: the estimate's error is observed."""
        estimate = self._estimates.get((job_id, backend))
        self.forget(job_id)
        self.estimator.measured(backend, images, actual_usd)
        if estimate is not None:
            self.metrics.estimate_error(backend, actual_usd - estimate)

    def forget(self, job_id: str) -> None:
        """The job left this process without a cost to compare."""
        for key in [key for key in self._estimates if key[0] == job_id]:
            del self._estimates[key]

    async def today(self, backends: Iterable[str] = BACKEND_NAMES) -> list[Use]:
        """Each budget's use today: the backends named, any that spent today, and the total."""
        return await self.db.read(budget.today, backends=list(backends), limits=self.limits, now=self.clock.time())

    async def refresh_gauges(self) -> None:
        """Read today's use into the budget gauges (none shown when the database cannot be read)."""
        try:
            uses: list[Use] | None = await self.today()
        except Exception as exc:  # the gauges go blank; the next refresh tries again
            log.warning("budget use unavailable error=%s", type(exc).__name__)
            uses = None
        self.metrics.observe(uses)

    async def _note_thresholds(self, outcome: HoldOutcome) -> None:
        now = self.clock.time()
        for use in outcome.uses:
            share = use.share
            if share is None:
                continue
            # A refused hold means the budget cannot take another job today: it counts as reached.
            percent = 100.0 if outcome.refused_by == use.budget else share * 100
            reached = [threshold for threshold in THRESHOLDS if percent + 1e-9 >= threshold]
            if reached:
                await self._reached(use, max(reached), now)

    async def _reached(self, use: Use, threshold: int, now: float) -> None:
        """Note a threshold reached (once per budget and UTC day: the admins are told of the first note);
        reaching 100 % reaches the lower thresholds too."""
        for level in (t for t in THRESHOLDS if t <= threshold):
            if await self.db.write(budget.reach, use=use, threshold=level, now=now):
                log.warning("%s budget reached %d%% ($%.2f of $%.2f)", use.budget, level, use.used_usd,
                            use.limit_usd or 0.0)  # fmt: skip
