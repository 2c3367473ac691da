"""The dispatcher against fake providers over a real store: retries, failover, resume, cancel, cost."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from engine.errors import FailureKind
from engine.routing import BreakerState
from storage import jobs
from storage.db import Database
from storage.states import DeliveryState, JobState
from tests.engine.dispatch_harness import harness
from tests.fakes.fal import FalOutcome, FalScript
from tests.fakes.providers_common import Fault
from tests.fakes.replicate import ReplicateOutcome, ReplicateScript
from tests.storage.ledger_helpers import credits_of, drift, new_user


async def test_renders_on_the_first_backend_and_charges_once(db: Database, tmp_path: Path) -> None:
    async with harness(db, tmp_path) as h:
        user = await new_user(db, credits=3)
        await h.submit("j1", user)
        await h.dispatcher(["fal-flux-pulid", "replicate-flux-pulid"]).drain()
        job = await h.job("j1")
        assert job.state == JobState.SUCCEEDED and job.backend == "fal-flux-pulid"
        assert job.delivery_state == DeliveryState.PENDING
        assert len(h.fal.requests("submit")) == 1 and h.replicate.requests() == []
        assert job.provider_ref is not None and job.provider_ref["backend"] == "fal-flux-pulid"
        billed_megapixels = h.fal.jobs[job.provider_ref["request_id"]].units
        assert billed_megapixels > 0 and job.spend_usd == pytest.approx(0.0333 * billed_megapixels, rel=1e-4)
        assert await credits_of(db, user) == (2, 0)
        assert await drift(db) == []
        kinds = [e.kind for e in h.events if e.job_id == "j1"]
        assert kinds[0] == "started" and kinds[-1] == "finished" and "backend" in kinds


async def test_retry_after_is_honoured_with_one_submit_per_try(db: Database, tmp_path: Path) -> None:
    async with harness(db, tmp_path) as h:
        user = await new_user(db, credits=10)
        h.fal.fail("submit", Fault(status=429, json={"detail": "slow down"}, headers={"Retry-After": "7"}))
        await h.submit("j1", user)
        await h.dispatcher(["fal-flux-pulid"]).drain()
        assert (await h.job("j1")).state == JobState.SUCCEEDED
        assert len(h.fal.requests("submit")) == 2  # the refused one and the retry
        assert len(h.backoffs) == 1 and h.backoffs[0] >= 7.0


async def test_backoff_grows_exponentially_then_fails_over(db: Database, tmp_path: Path) -> None:
    async with harness(db, tmp_path) as h:
        user = await new_user(db, credits=10)
        h.fal.fail("submit", *(Fault(status=503, json={"detail": "busy"}) for _ in range(3)))
        await h.submit("j1", user)
        await h.dispatcher(["fal-flux-pulid", "replicate-flux-pulid"], tries_per_backend=3).drain()
        job = await h.job("j1")
        assert job.state == JobState.SUCCEEDED and job.backend == "replicate-flux-pulid"
        assert h.backoffs == [1.0, 2.0]  # jitter pinned to the top of each step
        assert len(h.fal.requests("submit")) == 3 and len(h.replicate.requests("create")) == 1
        assert any(e.kind == "backend" and e.backend == "replicate-flux-pulid" for e in h.events)


async def test_out_of_credit_opens_the_circuit_and_moves_the_job_on(db: Database, tmp_path: Path) -> None:
    async with harness(db, tmp_path) as h:
        user = await new_user(db, credits=10)
        h.fal.locked = True
        await h.submit("j1", user)
        await h.submit("j2", user)
        dispatcher = h.dispatcher(["fal-flux-pulid", "replicate-flux-pulid"], concurrency=1)
        await dispatcher.drain()
        assert [(await h.job(j)).backend for j in ("j1", "j2")] == ["replicate-flux-pulid"] * 2
        assert len(h.fal.requests("submit")) == 1  # the second job skipped fal: its circuit is open
        assert dispatcher.router.breakers["fal-flux-pulid"].state is BreakerState.OPEN
        assert await credits_of(db, user) == (8, 0)


async def test_every_backend_failing_refunds(db: Database, tmp_path: Path) -> None:
    async with harness(db, tmp_path) as h:
        user = await new_user(db, credits=1)
        h.fal.locked = True
        h.replicate.script = ReplicateScript(outcome=ReplicateOutcome.ABORTED)
        await h.submit("j1", user)
        await h.dispatcher(["fal-flux-pulid", "replicate-flux-pulid"]).drain()
        job = await h.job("j1")
        assert job.state == JobState.FAILED and job.error == FailureKind.PROVIDER_FAILED
        assert await credits_of(db, user) == (1, 0)
        assert await drift(db) == []


async def test_pinned_backend_never_fails_over(db: Database, tmp_path: Path) -> None:
    async with harness(db, tmp_path) as h:
        user = await new_user(db, credits=10)
        h.fal.locked = True
        await h.submit("j1", user, route=["fal-flux-pulid", "replicate-flux-pulid"], pinned=True)
        await h.dispatcher(["fal-flux-pulid", "replicate-flux-pulid"]).drain()
        job = await h.job("j1")
        assert job.state == JobState.FAILED and job.error == FailureKind.OUT_OF_CREDIT
        assert h.replicate.requests() == []


async def test_content_policy_failure_is_not_failed_over(db: Database, tmp_path: Path) -> None:
    async with harness(db, tmp_path) as h:
        user = await new_user(db, credits=10)
        h.replicate.script = ReplicateScript(outcome=ReplicateOutcome.FAILED)
        await h.submit("j1", user)
        await h.dispatcher(["replicate-flux-pulid", "fal-flux-pulid"]).drain()
        job = await h.job("j1")
        assert job.state == JobState.FAILED and job.error == FailureKind.CONTENT_POLICY
        assert h.fal.requests() == []


async def test_unknown_submit_outcome_is_never_resent(db: Database, tmp_path: Path) -> None:
    async with harness(db, tmp_path) as h:
        user = await new_user(db, credits=10)
        h.fal.fail("submit", Fault(passthrough=True, hang_s=2.0))
        await h.submit("j1", user)
        await h.dispatcher(["fal-flux-pulid", "replicate-flux-pulid"]).drain()
        job = await h.job("j1")
        assert job.state == JobState.FAILED and job.error == FailureKind.UNKNOWN_OUTCOME
        assert len(h.fal.requests("submit")) == 1 and h.replicate.requests() == []
        assert await credits_of(db, user) == (10, 0)


async def test_options_no_backend_supports_fail_without_charge(db: Database, tmp_path: Path) -> None:
    async with harness(db, tmp_path) as h:
        user = await new_user(db, credits=10)
        await h.submit("j1", user, steps=45)  # fal allows 1–50 steps, Replicate 1–20
        await h.dispatcher(["replicate-flux-pulid"]).drain()
        job = await h.job("j1")
        assert job.state == JobState.FAILED and job.error == "no_backend"
        assert h.replicate.requests() == []
        assert await credits_of(db, user) == (10, 0)


async def test_restarted_dispatcher_resumes_the_same_request_and_charges_once(db: Database, tmp_path: Path) -> None:
    async with harness(db, tmp_path) as h:
        user = await new_user(db, credits=2)
        h.fal.script = FalScript(queue_ticks=10_000)
        await h.submit("j1", user)
        first = h.dispatcher(["fal-flux-pulid"], lease_s=0.5, heartbeat_s=10, worker="first")
        stop = asyncio.Event()
        running = asyncio.create_task(first.run(stop))
        await wait_until(lambda: bool(h.fal.requests("status")))
        stop.set()  # the process goes away without cancelling anything
        await running
        assert h.fal.requests("cancel") == []
        rid = (await h.job("j1")).provider_ref["request_id"]  # type: ignore[index]
        h.fal.jobs[rid].script.queue_ticks = 0  # the provider finishes the request meanwhile
        await asyncio.sleep(0.6)
        await db.write(jobs.expire_leases, now=time.time())
        await h.dispatcher(["fal-flux-pulid"], worker="second").drain()
        job = await h.job("j1")
        assert job.state == JobState.SUCCEEDED and job.attempt == 2
        assert len(h.fal.requests("submit")) == 1  # resumed, not paid twice
        assert job.provider_ref is not None and job.provider_ref["request_id"] == rid
        assert await credits_of(db, user) == (1, 0)


async def test_cancel_reaches_the_provider_and_refunds(db: Database, tmp_path: Path) -> None:
    async with harness(db, tmp_path) as h:
        user = await new_user(db, credits=2)
        h.fal.script = FalScript(outcome=FalOutcome.STUCK)
        await h.submit("j1", user)
        dispatcher = h.dispatcher(["fal-flux-pulid"], heartbeat_s=0.05)
        draining = asyncio.create_task(dispatcher.drain())
        await wait_until(lambda: bool(h.fal.requests("status")))
        assert await db.write(jobs.cancel, job_id="j1", now=time.time()) == jobs.CancelOutcome.REQUESTED
        await asyncio.wait_for(draining, 10)
        job = await h.job("j1")
        assert job.state == JobState.CANCELLED
        assert len(h.fal.requests("cancel")) == 1
        assert await credits_of(db, user) == (2, 0)
        assert await drift(db) == []


async def test_deadline_fails_and_cancels_at_the_provider(db: Database, tmp_path: Path) -> None:
    async with harness(db, tmp_path) as h:
        user = await new_user(db, credits=10)
        h.fal.script = FalScript(outcome=FalOutcome.STUCK)
        await h.submit("j1", user)
        draining = asyncio.create_task(h.dispatcher(["fal-flux-pulid"], heartbeat_s=0.05).drain())
        await wait_until(lambda: bool(h.fal.requests("status")))  # submitted: there is something to cancel
        await db.write(_set_job, job_id="j1", deadline_at=time.time())
        await asyncio.wait_for(draining, 10)
        job = await h.job("j1")
        assert job.state == JobState.FAILED and job.error == "deadline"
        assert len(h.fal.requests("cancel")) == 1
        assert await credits_of(db, user) == (10, 0)


def _set_job(*, session: object, job_id: str, **values: object) -> None:
    """Move a job's clock fields by hand: deadlines and due times without waiting for them."""
    from sqlalchemy import update

    from storage import tables

    session.execute(update(tables.jobs).where(tables.jobs.c.id == job_id).values(**values))  # type: ignore[attr-defined]


async def test_many_jobs_respect_the_backend_concurrency(db: Database, tmp_path: Path) -> None:
    async with harness(db, tmp_path) as h:
        users = [await new_user(db) for _ in range(6)]
        for i in range(12):
            await h.submit(f"j{i}", users[i % 6])
        await h.dispatcher(["fal-flux-pulid"], backend_concurrency={"fal-flux-pulid": 2}).drain()
        assert h.fal.high_water <= 2
        states = {(await h.job(f"j{i}")).state for i in range(12)}
        assert states == {JobState.SUCCEEDED}


async def wait_until(predicate: object, within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.01)


async def test_a_job_that_waited_past_its_deadline_is_not_sent(db: Database, tmp_path: Path) -> None:
    async with harness(db, tmp_path) as h:
        user = await new_user(db, credits=10)
        await h.submit("stale", user)
        await db.write(_set_job, job_id="stale", deadline_at=time.time() - 1)
        await h.dispatcher(["fal-flux-pulid"]).drain()
        job = await h.job("stale")
        assert job.state == JobState.FAILED and job.error == "deadline"
        assert h.fal.requests() == []
        assert await credits_of(db, user) == (10, 0)


async def test_a_long_retry_after_puts_the_job_back_in_the_queue(db: Database, tmp_path: Path) -> None:
    async with harness(db, tmp_path) as h:
        user = await new_user(db, credits=10)
        h.fal.fail("submit", Fault(status=429, json={"detail": "slow down"}, headers={"Retry-After": "60"}))
        await h.submit("j1", user)
        before = time.time()
        dispatcher = h.dispatcher(["fal-flux-pulid"], heartbeat_s=0.05)
        await dispatcher.drain()  # nothing due any more: the job waits in the queue
        job = await h.job("j1")
        assert job.state == JobState.QUEUED and job.attempt == 1 and job.error == FailureKind.TRANSIENT
        assert job.run_after >= before + 60
        assert h.backoffs == []  # the slot was not held for the wait
        assert not any(e.kind == "finished" for e in h.events)
        assert await credits_of(db, user) == (10, 1)  # still reserved, not charged
        await db.write(_set_job, job_id="j1", run_after=time.time())  # the wait is over
        await dispatcher.drain()
        job = await h.job("j1")
        assert job.state == JobState.SUCCEEDED and job.attempt == 2
        assert len(h.fal.requests("submit")) == 2
        assert await credits_of(db, user) == (9, 0)
        assert await drift(db) == []
