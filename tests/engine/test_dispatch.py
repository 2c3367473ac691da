"""The dispatcher over a real store: retries, failover, resume, cancel, deadlines, cost."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from engine.attempt import Attempt, AttemptProgress, Renderer
from engine.backend import GenerationResult, Progress, ProviderRef
from engine.clock import SYSTEM_CLOCK
from engine.dispatch import Dispatcher
from engine.errors import AuthError, FailureKind, ProtocolError, ProviderFailedError, TransientError
from engine.gate import BreakerState
from engine.request import GenerationRequest
from storage import jobs
from storage.blobs import blob_key
from storage.db import Database
from storage.states import DeliveryState, JobState
from tests.engine.dispatch_harness import FACE, Harness, harness
from tests.engine.scripted_backend import At, ScriptedBackend, Step
from tests.fakes.fal import FalOutcome, FalScript
from tests.fakes.providers_common import Fault, malformed_json
from tests.fakes.replicate import ReplicateOutcome, ReplicateScript
from tests.storage.ledger_helpers import credits_of, drift, new_user
from tests.virtual_clock import ManualClock


async def test_renders_on_the_first_backend_and_charges_once(db: Database, tmp_path: Path) -> None:
    async with harness(db, tmp_path) as h:
        user = await new_user(db, credits=3)
        await h.submit("j1", user)
        await h.drain(h.dispatcher(["fal-flux-pulid", "replicate-flux-pulid"]))
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
        await h.drain(h.dispatcher(["fal-flux-pulid"]))
        assert (await h.job("j1")).state == JobState.SUCCEEDED
        assert len(h.fal.requests("submit")) == 2  # the refused one and the retry
        assert len(h.backoffs) == 1 and h.backoffs[0] >= 7.0


async def test_backoff_grows_exponentially_then_fails_over(db: Database, tmp_path: Path) -> None:
    async with harness(db, tmp_path) as h:
        user = await new_user(db, credits=10)
        h.fal.fail("submit", *(Fault(status=503, json={"detail": "busy"}) for _ in range(3)))
        await h.submit("j1", user)
        await h.drain(h.dispatcher(["fal-flux-pulid", "replicate-flux-pulid"], tries_per_backend=3))
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
        await h.drain(dispatcher)
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
        await h.drain(h.dispatcher(["fal-flux-pulid", "replicate-flux-pulid"]))
        job = await h.job("j1")
        assert job.state == JobState.FAILED and job.error == FailureKind.PROVIDER_FAILED
        assert await credits_of(db, user) == (1, 0)
        assert await drift(db) == []


async def test_pinned_backend_never_fails_over(db: Database, tmp_path: Path) -> None:
    async with harness(db, tmp_path) as h:
        user = await new_user(db, credits=10)
        h.fal.locked = True
        await h.submit("j1", user, route=["fal-flux-pulid", "replicate-flux-pulid"], pinned=True)
        await h.drain(h.dispatcher(["fal-flux-pulid", "replicate-flux-pulid"]))
        job = await h.job("j1")
        assert job.state == JobState.FAILED and job.error == FailureKind.OUT_OF_CREDIT
        assert h.replicate.requests() == []


async def test_content_policy_failure_is_not_failed_over(db: Database, tmp_path: Path) -> None:
    async with harness(db, tmp_path) as h:
        user = await new_user(db, credits=10)
        h.replicate.script = ReplicateScript(outcome=ReplicateOutcome.FAILED)
        await h.submit("j1", user)
        await h.drain(h.dispatcher(["replicate-flux-pulid", "fal-flux-pulid"]))
        job = await h.job("j1")
        assert job.state == JobState.FAILED and job.error == FailureKind.CONTENT_POLICY
        assert h.fal.requests() == []


async def test_unknown_submit_outcome_is_never_resent(db: Database, tmp_path: Path) -> None:
    async with harness(db, tmp_path) as h:
        user = await new_user(db, credits=10)
        h.fal.fail("submit", Fault(passthrough=True, hang_s=2.0))
        await h.submit("j1", user)
        await h.drain(h.dispatcher(["fal-flux-pulid", "replicate-flux-pulid"]))
        job = await h.job("j1")
        assert job.state == JobState.FAILED and job.error == FailureKind.UNKNOWN_OUTCOME
        assert len(h.fal.requests("submit")) == 1 and h.replicate.requests() == []
        assert await credits_of(db, user) == (10, 0)


async def test_options_no_backend_supports_fail_without_charge(db: Database, tmp_path: Path) -> None:
    async with harness(db, tmp_path) as h:
        user = await new_user(db, credits=10)
        await h.submit("j1", user, steps=45)  # fal allows 1–50 steps, Replicate 1–20
        await h.drain(h.dispatcher(["replicate-flux-pulid"]))
        job = await h.job("j1")
        assert job.state == JobState.FAILED and job.error == "no_backend"
        assert h.replicate.requests() == []
        assert await credits_of(db, user) == (10, 0)


async def test_restarted_dispatcher_resumes_the_same_request_and_charges_once(db: Database, tmp_path: Path) -> None:
    async with harness(db, tmp_path) as h:
        user = await new_user(db, credits=2)
        h.fal.script = FalScript(queue_ticks=10_000)
        await h.submit("j1", user)
        first = h.dispatcher(["fal-flux-pulid"], lease_s=30, worker="first")
        stop = asyncio.Event()
        running = asyncio.create_task(first.run(stop))
        await wait_until(lambda: bool(h.fal.requests("status")))
        stop.set()  # the process goes away without cancelling anything
        await running
        assert h.fal.requests("cancel") == []
        rid = (await h.job("j1")).provider_ref["request_id"]  # type: ignore[index]
        h.fal.jobs[rid].script.queue_ticks = 0  # the provider finishes the request meanwhile
        h.clock.advance(31)  # no heartbeat came: the lease runs out
        assert await db.write(jobs.expire_leases, now=h.clock.time()) == ["j1"]
        await h.drain(h.dispatcher(["fal-flux-pulid"], worker="second"))
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
        dispatcher = h.dispatcher(["fal-flux-pulid"])
        draining = asyncio.create_task(h.drain(dispatcher))
        await wait_until(lambda: bool(h.fal.requests("status")))
        assert await db.write(jobs.cancel, job_id="j1", now=h.clock.time()) == jobs.CancelOutcome.REQUESTED
        await h.beat(dispatcher)  # the heartbeat carries the cancel request
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
        dispatcher = h.dispatcher(["fal-flux-pulid"])
        draining = asyncio.create_task(h.drain(dispatcher))
        await wait_until(lambda: bool(h.fal.requests("status")))  # submitted: there is something to cancel
        await db.write(_set_job, job_id="j1", deadline_at=h.clock.time())
        await h.beat(dispatcher)  # the heartbeat finds the deadline passed
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
        await h.drain(h.dispatcher(["fal-flux-pulid"], backend_concurrency={"fal-flux-pulid": 2}))
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
        await db.write(_set_job, job_id="stale", deadline_at=h.clock.time() - 1)
        await h.drain(h.dispatcher(["fal-flux-pulid"]))
        job = await h.job("stale")
        assert job.state == JobState.FAILED and job.error == "deadline"
        assert h.fal.requests() == []
        assert await credits_of(db, user) == (10, 0)


async def test_a_long_retry_after_puts_the_job_back_in_the_queue(db: Database, tmp_path: Path) -> None:
    async with harness(db, tmp_path) as h:
        user = await new_user(db, credits=10)
        h.fal.fail("submit", Fault(status=429, json={"detail": "slow down"}, headers={"Retry-After": "60"}))
        await h.submit("j1", user)
        before = h.clock.time()
        dispatcher = h.dispatcher(["fal-flux-pulid"])
        await h.drain(dispatcher)  # nothing due any more: the job waits in the queue
        job = await h.job("j1")
        assert job.state == JobState.QUEUED and job.attempt == 1 and job.error == FailureKind.TRANSIENT
        assert job.run_after >= before + 60
        assert h.backoffs == []  # the slot was not held for the wait
        assert not any(e.kind == "finished" for e in h.events)
        assert await credits_of(db, user) == (10, 1)  # still reserved, not charged
        h.clock.advance(60)  # the wait is over
        await h.drain(dispatcher)
        job = await h.job("j1")
        assert job.state == JobState.SUCCEEDED and job.attempt == 2
        assert len(h.fal.requests("submit")) == 2
        assert await credits_of(db, user) == (9, 0)
        assert await drift(db) == []


async def test_a_transient_error_after_submit_resumes_the_request_instead_of_paying_again(
    db: Database, tmp_path: Path
) -> None:
    async with harness(db, tmp_path) as h:
        user = await new_user(db, credits=3)
        backend = ScriptedBackend(script=[Step(TransientError("503 while polling"))])
        await h.submit("j1", user)
        await h.drain(h.dispatcher([backend.name], backends={backend.name: backend}))
        job = await h.job("j1")
        assert job.state == JobState.SUCCEEDED and job.attempt == 1
        assert backend.submitted == ["scripted-1"]  # one submit: the provider bills once
        assert backend.resumed == ["scripted-1"]
        assert h.backoffs == [1.0]
        assert job.provider_ref is not None and job.provider_ref["request_id"] == "scripted-1"
        assert await credits_of(db, user) == (2, 0)


async def test_a_refused_submit_is_sent_again(db: Database, tmp_path: Path) -> None:
    async with harness(db, tmp_path) as h:
        user = await new_user(db, credits=3)
        backend = ScriptedBackend(script=[Step(TransientError("429 on submit"), at=At.SUBMIT)])
        await h.submit("j1", user)
        await h.drain(h.dispatcher([backend.name], backends={backend.name: backend}))
        assert (await h.job("j1")).state == JobState.SUCCEEDED
        assert backend.refused == 1 and backend.submitted == ["scripted-1"] and backend.resumed == []


async def test_a_requeued_job_resumes_its_request_on_the_next_attempt(db: Database, tmp_path: Path) -> None:
    async with harness(db, tmp_path) as h:
        user = await new_user(db, credits=3)
        backend = ScriptedBackend(script=[Step(TransientError("busy", retry_after=60))])
        await h.submit("j1", user)
        dispatcher = h.dispatcher([backend.name], backends={backend.name: backend})
        await h.drain(dispatcher)
        assert (await h.job("j1")).state == JobState.QUEUED
        h.clock.advance(60)
        await h.drain(dispatcher)
        job = await h.job("j1")
        assert job.state == JobState.SUCCEEDED and job.attempt == 2
        assert backend.submitted == ["scripted-1"] and backend.resumed == ["scripted-1"]
        assert await credits_of(db, user) == (2, 0)


async def test_failing_over_after_a_submit_starts_a_new_request_on_the_next_backend(
    db: Database, tmp_path: Path
) -> None:
    async with harness(db, tmp_path) as h:
        user = await new_user(db, credits=3)
        first = ScriptedBackend("first", script=[Step(ProviderFailedError("the provider gave up"))])
        second = ScriptedBackend("second")
        await h.submit("j1", user)
        await h.drain(h.dispatcher(["first", "second"], backends={"first": first, "second": second}))
        job = await h.job("j1")
        assert job.state == JobState.SUCCEEDED and job.backend == "second"
        assert first.submitted == ["first-1"] and second.submitted == ["second-1"] and second.resumed == []
        assert job.provider_ref is not None and job.provider_ref["request_id"] == "second-1"


async def test_a_failure_after_the_provider_took_the_job_is_not_failed_over(db: Database, tmp_path: Path) -> None:
    async with harness(db, tmp_path) as h:
        user = await new_user(db, credits=3)
        first = ScriptedBackend("first", script=[Step(ProtocolError("the output is no image"))])
        second = ScriptedBackend("second")
        await h.submit("j1", user)
        await h.drain(h.dispatcher(["first", "second"], backends={"first": first, "second": second}))
        job = await h.job("j1")
        assert job.state == JobState.FAILED and job.error == FailureKind.PROTOCOL
        assert first.submitted == ["first-1"] and second.submitted == []  # the job is billed once, at most
        assert await credits_of(db, user) == (3, 0)


async def test_passing_failures_after_the_provider_took_the_job_resume_it_from_the_queue(
    db: Database, tmp_path: Path
) -> None:
    async with harness(db, tmp_path) as h:
        user = await new_user(db, credits=3)
        first = ScriptedBackend("first", script=[Step(TransientError("503 while polling"))] * 2)
        second = ScriptedBackend("second")
        await h.submit("j1", user)
        dispatcher = h.dispatcher(
            ["first", "second"], backends={"first": first, "second": second}, tries_per_backend=2, breaker_threshold=1
        )
        await h.drain(dispatcher)
        assert (await h.job("j1")).state == JobState.QUEUED  # back in the queue, its request kept
        h.clock.advance(60)
        await h.drain(dispatcher)
        job = await h.job("j1")
        assert job.state == JobState.SUCCEEDED and job.attempt == 2 and job.backend == "first"
        assert first.submitted == ["first-1"] and first.resumed == ["first-1"] * 2 and second.submitted == []
        assert await credits_of(db, user) == (2, 0)


async def test_a_malformed_answer_to_submit_is_neither_sent_again_nor_failed_over(db: Database, tmp_path: Path) -> None:
    async with harness(db, tmp_path) as h:
        user = await new_user(db, credits=10)
        h.fal.fail("submit", malformed_json())
        await h.submit("j1", user)
        await h.drain(h.dispatcher(["fal-flux-pulid", "replicate-flux-pulid"]))
        job = await h.job("j1")
        assert job.state == JobState.FAILED and job.error == FailureKind.UNKNOWN_OUTCOME
        assert len(h.fal.requests("submit")) == 1 and h.replicate.requests() == []
        assert await credits_of(db, user) == (10, 0)


async def dead_attempt(h: Harness, dispatcher: Dispatcher, backend: str, ref: ProviderRef | None = None) -> None:
    """Attempt 1 of the queued job, by a worker that died after sending a submit to ``backend`` (and, given
    ``ref``, after storing the provider's answer); its lease then runs out."""
    job = await h.db.write(jobs.claim, worker="dead", lease_s=30, running_cap=10, now=h.clock.time())
    assert job is not None
    renderer = Renderer(
        h.db, h.blobs, dispatcher.router, dispatcher.gates, hub=h.hub, clock=h.clock, stopping=lambda: False
    )
    progress = AttemptProgress(renderer, Attempt(job), backend)
    await progress.submitting()
    if ref is not None:
        await progress.submitted(ref)
    h.clock.advance(31)
    assert await h.db.write(jobs.expire_leases, now=h.clock.time()) == [job.id]


async def test_a_submit_whose_worker_died_before_storing_the_answer_is_never_sent_again(
    db: Database, tmp_path: Path
) -> None:
    async with harness(db, tmp_path) as h:
        user = await new_user(db, credits=2)
        await h.submit("j1", user)
        dispatcher = h.dispatcher(["fal-flux-pulid", "replicate-flux-pulid"])
        await dead_attempt(h, dispatcher, "fal-flux-pulid")  # the provider may have taken and billed it
        await h.drain(dispatcher)
        job = await h.job("j1")
        assert job.state == JobState.FAILED and job.error == FailureKind.UNKNOWN_OUTCOME and job.attempt == 2
        assert h.fal.requests() == [] and h.replicate.requests() == []  # neither again nor elsewhere
        assert await credits_of(db, user) == (2, 0)
        assert await drift(db) == []


async def test_a_job_whose_unanswered_submit_may_be_held_is_not_failed_over_when_its_backend_breaks(
    db: Database, tmp_path: Path
) -> None:
    async with harness(db, tmp_path) as h:
        user = await new_user(db, credits=2)
        first = ScriptedBackend("first", script=[Step(AuthError("the key was revoked"), at=At.PREPARE)])
        second = ScriptedBackend("second")
        await h.submit("j1", user)
        dispatcher = h.dispatcher(["first", "second"], backends={"first": first, "second": second})
        await dead_attempt(h, dispatcher, "first")
        await h.drain(dispatcher)
        job = await h.job("j1")
        assert job.state == JobState.FAILED and job.error == FailureKind.AUTH
        assert first.submitted == [] and second.submitted == []
        assert await credits_of(db, user) == (2, 0)


async def test_a_request_a_provider_holds_is_resumed_there_even_with_its_circuit_open(
    db: Database, tmp_path: Path
) -> None:
    async with harness(db, tmp_path) as h:
        user = await new_user(db, credits=2)
        first, second = ScriptedBackend("first"), ScriptedBackend("second")
        await h.submit("j1", user)
        dispatcher = h.dispatcher(["first", "second"], backends={"first": first, "second": second})
        await dead_attempt(h, dispatcher, "first", ProviderRef("first", "first-1"))
        dispatcher.router.breakers["first"].open(600)  # this worker saw the backend failing
        await h.drain(dispatcher)
        job = await h.job("j1")
        assert job.state == JobState.SUCCEEDED and job.backend == "first" and job.attempt == 2
        assert first.resumed == ["first-1"] and first.submitted == [] and second.submitted == []
        assert await credits_of(db, user) == (1, 0)


async def test_a_face_photo_gone_from_the_store_fails_the_job_without_a_backend(db: Database, tmp_path: Path) -> None:
    async with harness(db, tmp_path) as h:
        user = await new_user(db, credits=3)
        backend = ScriptedBackend()
        await h.submit("j1", user)
        await h.blobs.delete(blob_key(FACE))
        await h.drain(h.dispatcher([backend.name], backends={backend.name: backend}))
        job = await h.job("j1")
        assert job.state == JobState.FAILED and job.error == "photo_missing"
        assert backend.submitted == []
        assert await credits_of(db, user) == (3, 0)


async def test_a_crash_inside_a_backend_fails_the_job_as_internal(db: Database, tmp_path: Path) -> None:
    async with harness(db, tmp_path) as h:
        user = await new_user(db, credits=3)
        backend = ScriptedBackend(script=[Step(KeyError("a bug, not a missing photo"))])
        await h.submit("j1", user)
        await h.drain(h.dispatcher([backend.name], backends={backend.name: backend}))
        job = await h.job("j1")
        assert job.state == JobState.FAILED and job.error == "internal" and job.error_detail == "KeyError"
        assert await credits_of(db, user) == (3, 0)
        assert await drift(db) == []


async def test_on_the_real_clock_heartbeats_keep_the_lease_and_carry_the_cancel(db: Database, tmp_path: Path) -> None:
    async with harness(db, tmp_path, clock=SYSTEM_CLOCK) as h:
        user = await new_user(db, credits=2)
        h.fal.script = FalScript(outcome=FalOutcome.STUCK)
        await h.submit("j1", user)
        draining = asyncio.create_task(h.dispatcher(["fal-flux-pulid"], lease_s=1.0, heartbeat_s=0.05).drain())
        await wait_until(lambda: bool(h.fal.requests("status")))
        await asyncio.sleep(1.5)  # longer than the lease: only heartbeats keep it
        assert await db.write(jobs.expire_leases, now=time.time()) == []
        assert await db.write(jobs.cancel, job_id="j1", now=time.time()) == jobs.CancelOutcome.REQUESTED
        await asyncio.wait_for(draining, 10)
        assert (await h.job("j1")).state == JobState.CANCELLED
        assert len(h.fal.requests("cancel")) == 1
        assert await credits_of(db, user) == (2, 0)


async def test_a_retry_after_past_the_deadline_fails_and_refunds_instead_of_parking(
    db: Database, tmp_path: Path
) -> None:
    async with harness(db, tmp_path) as h:
        user = await new_user(db, credits=10)
        h.fal.fail("submit", Fault(status=429, json={"detail": "slow down"}, headers={"Retry-After": "3600"}))
        await h.submit("j1", user)  # a 600 s deadline
        await h.drain(h.dispatcher(["fal-flux-pulid"]))
        job = await h.job("j1")
        assert job.state == JobState.FAILED and job.error == FailureKind.TRANSIENT
        assert h.backoffs == [] and len(h.fal.requests("submit")) == 1
        assert await credits_of(db, user) == (10, 0)  # refunded now, not held for an hour
        assert await drift(db) == []


async def test_a_retry_after_past_the_deadline_moves_the_job_to_the_next_backend(db: Database, tmp_path: Path) -> None:
    async with harness(db, tmp_path) as h:
        user = await new_user(db, credits=10)
        h.fal.fail("submit", Fault(status=429, json={"detail": "slow down"}, headers={"Retry-After": "3600"}))
        await h.submit("j1", user)
        await h.drain(h.dispatcher(["fal-flux-pulid", "replicate-flux-pulid"]))
        job = await h.job("j1")
        assert job.state == JobState.SUCCEEDED and job.backend == "replicate-flux-pulid" and job.attempt == 1
        assert h.backoffs == []
        assert await credits_of(db, user) == (9, 0)


class _SlowFailure(ScriptedBackend):
    """Fails after the clock has run past the job's deadline."""

    def __init__(self, clock: ManualClock, seconds: float) -> None:
        super().__init__("slow", script=[Step(ProviderFailedError("gave up"))])
        self.clock, self.seconds = clock, seconds

    async def generate(self, request: GenerationRequest, progress: Progress) -> GenerationResult:
        self.clock.advance(self.seconds)
        return await super().generate(request, progress)


async def test_a_job_past_its_deadline_is_not_sent_to_the_next_backend(db: Database, tmp_path: Path) -> None:
    async with harness(db, tmp_path) as h:
        assert isinstance(h.clock, ManualClock)
        user = await new_user(db, credits=10)
        slow, second = _SlowFailure(h.clock, 601), ScriptedBackend("second")
        await h.submit("j1", user)
        # The heartbeat (which would notice the deadline too) is not due before the failover.
        dispatcher = h.dispatcher(
            ["slow", "second"], backends={"slow": slow, "second": second}, heartbeat_s=5_000, lease_s=20_000
        )
        await h.drain(dispatcher)
        job = await h.job("j1")
        assert job.state == JobState.FAILED and job.error == "deadline"
        assert slow.submitted == ["slow-1"] and second.submitted == []
        assert await credits_of(db, user) == (10, 0)


async def test_the_sweep_fails_and_refunds_queued_jobs_past_their_deadline(db: Database, tmp_path: Path) -> None:
    async with harness(db, tmp_path) as h:
        user = await new_user(db, credits=10)
        await h.submit("stale", user)
        await h.submit("waiting", user)
        await h.submit("fresh", user)
        # Nothing claims them: both wait for a retry far off; one of them is past its deadline already.
        for job_id in ("stale", "waiting"):
            await db.write(_set_job, job_id=job_id, run_after=h.clock.time() + 3600)
        await db.write(_set_job, job_id="stale", deadline_at=h.clock.time() - 1)
        dispatcher = h.dispatcher(["fal-flux-pulid"])
        stop = asyncio.Event()
        running = asyncio.create_task(dispatcher.run(stop))
        await wait_until(lambda: any(e.job_id == "fresh" and e.kind == "finished" for e in h.events))
        stop.set()
        await running
        stale = await h.job("stale")
        assert stale.state == JobState.FAILED and stale.error == "deadline"
        assert stale.delivery_state == DeliveryState.PENDING  # the user hears why
        assert (await h.job("waiting")).state == JobState.QUEUED
        assert any(e.job_id == "stale" and e.kind == "finished" for e in h.events)
        assert await credits_of(db, user) == (9, 1)  # the stale job refunded, the waiting one still held
        assert await drift(db) == []


async def test_a_run_for_one_job_claims_that_job_alone_and_sweeps_nothing(db: Database, tmp_path: Path) -> None:
    async with harness(db, tmp_path) as h:
        user, operator = await new_user(db, credits=10), await new_user(db, credits=10)
        await h.submit("users-job", user)
        await h.submit("stale", user)
        await db.write(_set_job, job_id="stale", deadline_at=h.clock.time() - 1, run_after=h.clock.time() + 3600)
        await h.submit("cli-job", operator)
        dispatcher = h.dispatcher(["fal-flux-pulid"])
        stop = asyncio.Event()
        running = asyncio.create_task(dispatcher.run(stop, only="cli-job"))
        await wait_until(lambda: any(e.job_id == "cli-job" and e.kind == "finished" for e in h.events))
        stop.set()
        await running
        assert (await h.job("cli-job")).state == JobState.SUCCEEDED
        for left in ("users-job", "stale"):
            job = await h.job(left)
            assert (job.state, job.attempt) == (JobState.QUEUED, 0)
        assert len(h.fal.requests("submit")) == 1
        assert await credits_of(db, user) == (10, 2)
