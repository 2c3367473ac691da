"""Daily budgets through the service: fail over past a spent backend, refuse new jobs uncharged, tell the admins."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from bot import messages
from bot.alerts import BudgetAlerts
from bot.errors import UserError
from bot.service.imagine import ImagineInput
from bot.service.use_cases import LikenessService
from engine.backend import Backend, GenerationResult, Progress
from engine.budget import BudgetGauges, BudgetGuard, Estimator, PerImage
from engine.dispatch import Dispatcher
from engine.events import ProgressHub
from engine.request import GenerationRequest
from engine.routing import Router
from storage import jobs
from storage.blobs import LocalBlobStore
from storage.db import Database
from storage.models import Job
from tests.bot.service.conftest import ADMIN, ANN, ChatTarget, face_photo, world_settings
from tests.bot.service.scripted import ScriptedBackend
from tests.virtual_clock import VirtualClock

NOON = dt.datetime(2026, 12, 12, 12, tzinfo=dt.UTC).timestamp()


@dataclass
class Priced(ScriptedBackend):
    """Renders like the scripted backend and reports what the provider billed."""

    usd_per_image: float = 0.5

    async def generate(self, request: GenerationRequest, progress: Progress) -> GenerationResult:
        result = await super().generate(request, progress)
        return GenerationResult(result.images, result.seed, round(self.usd_per_image * len(result.images), 6))


class Admins:
    """A front end that records what it tells admins."""

    platform = "telegram"

    def __init__(self) -> None:
        self.told: list[tuple[str, str]] = []

    async def notify(self, user_id: str, text: str) -> None:
        self.told.append((user_id, text))


@dataclass
class Shop:
    db: Database
    service: LikenessService
    dispatcher: Dispatcher
    guard: BudgetGuard
    clock: VirtualClock
    first: Priced
    second: Priced
    registry: CollectorRegistry

    async def ask(self, event: str) -> str:
        submitted = await self.service.imagine.submit(ANN, ImagineInput(event, "a knight", ChatTarget("c1"),
                                                                        photos=(face_photo(),)))  # fmt: skip
        return submitted.job_id

    async def job(self, job_id: str) -> Job:
        found = await self.db.read(jobs.get, job_id=job_id)
        assert found is not None
        return found


@pytest.fixture
async def shop(tmp_path: Path) -> AsyncIterator[Shop]:
    settings = world_settings(tmp_path, credits={"new_user": 100, "per_image": 1, "daily_jobs": 100})
    db = Database(f"sqlite:///{tmp_path / 'likeness.db'}")
    await db.upgrade()
    clock = VirtualClock(start=NOON)
    first, second = Priced(name="first", usd_per_image=0.5), Priced(name="second", usd_per_image=0.25)
    backends: dict[str, Backend] = {"first": first, "second": second}
    router = Router(backends, ["first", "second"], Dispatcher.breakers_for(list(backends), settings.dispatch))
    registry = CollectorRegistry()
    guard = BudgetGuard(
        db,
        {"first": 1.0, "second": 1.0},
        Estimator({"first": PerImage(0.5), "second": PerImage(0.2)}),
        clock=clock,
        metrics=BudgetGauges(registry),
    )
    router.budget = guard
    blobs = LocalBlobStore(tmp_path / "blobs")
    dispatcher = Dispatcher(
        db, blobs, router, settings=settings.dispatch, queue=settings.queue, hub=ProgressHub(), worker_id="budget",
        clock=clock,
    )  # fmt: skip
    service = LikenessService(db=db, blobs=blobs, router=router, settings=settings, clock=clock.time)
    try:
        yield Shop(db, service, dispatcher, guard, clock, first, second, registry)
    finally:
        await dispatcher.abandon()
        await db.dispose()


async def test_jobs_fail_over_past_a_spent_budget_then_new_ones_are_refused_uncharged(shop: Shop) -> None:
    # "first" affords two jobs (0.5 each of 1.0), then "second" four (0.25 recorded, 0.2 estimated, of 1.0).
    backends = []
    for number in range(6):
        job_id = await shop.ask(f"e{number}")
        await shop.dispatcher.drain()
        job = await shop.job(job_id)
        assert job.state == "succeeded", job.error
        backends.append(job.backend)
    assert backends == ["first", "first", "second", "second", "second", "second"]
    with pytest.raises(UserError) as refused:
        await shop.ask("e-over")
    assert refused.value.message == messages.OVER_BUDGET
    assert await shop.db.read(jobs.get, job_id="e-over") is None
    user = await shop.service.users.of(ANN)
    assert (user.credits, user.reserved) == (94, 0)
    spent = {use.budget: round(use.spent_usd, 6) for use in await shop.guard.today(["first", "second"])}
    assert spent == {"first": 1.0, "second": 1.0, "total": 2.0}

    # The next UTC day starts with the budgets whole again.
    shop.clock.advance(86_400)
    job_id = await shop.ask("tomorrow")
    await shop.dispatcher.drain()
    assert (await shop.job(job_id)).backend == "first"


async def test_a_queued_job_whose_backends_spent_their_budget_meanwhile_fails_refunded(shop: Shop) -> None:
    waiting = await shop.ask("waiting")
    # Meanwhile the operator lowers both budgets to nothing: the queued job can start nowhere.
    shop.guard.limits = {"first": 0.0, "second": 0.0}
    await shop.dispatcher.drain()
    job = await shop.job(waiting)
    assert (job.state, job.error) == ("failed", "over_budget")
    assert messages.failure("over_budget", 1).startswith(messages.FAILURES["over_budget"])
    user = await shop.service.users.of(ANN)
    assert (user.credits, user.reserved) == (100, 0)
    assert shop.first.requests == [] and shop.second.requests == []


async def test_the_admins_are_told_once_per_threshold_and_day(shop: Shop) -> None:
    admins = Admins()
    alerts = BudgetAlerts(shop.db, {"telegram": admins}, [ADMIN.key, "discord:55"], shop.guard, clock=shop.clock.time)
    shop.guard.limits = {"first": 1.0}
    seen: list[int] = []
    for number in range(4):  # 0.5 + 0.5 reaches "first"; the rest go to "second", unlimited now
        await shop.ask(f"e{number}")
        await shop.dispatcher.drain()
        seen.append(await alerts.once())
    told = [text for _, text in admins.told]
    assert [user for user, _ in admins.told] == [ADMIN.user_id] * 2  # Discord has no front end here
    assert told == [
        messages.budget_alert("first", 80, 1.0, 1.0, "2026-12-12"),
        messages.budget_alert("first", 100, 1.0, 1.0, "2026-12-12"),
    ]
    assert sum(seen) == 2
    # The gauges show today's use.
    used = shop.registry.get_sample_value("likeness_budget_used_ratio", {"budget": "first"})
    assert used == pytest.approx(1.0)
    errors = shop.registry.get_sample_value("likeness_spend_estimate_error_usd_count", {"backend": "second"})
    assert errors == 2
    # A new day, the same thresholds are told again.
    shop.clock.advance(86_400)
    for number in range(2):
        await shop.ask(f"d2-{number}")
        await shop.dispatcher.drain()
    await alerts.once()
    assert len(admins.told) == 4
