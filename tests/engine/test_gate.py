"""A backend's gate on a virtual clock: slots, submit rate, circuit breaker and the decision after a failure."""

from __future__ import annotations

import asyncio

import pytest

from engine.errors import (
    AuthError,
    BackendError,
    ContentPolicyError,
    InvalidInputError,
    NoFaceError,
    OutOfCreditError,
    OutputExpiredError,
    ProtocolError,
    ProviderFailedError,
    TransientError,
    UnknownOutcomeError,
)
from engine.gate import BackendGate, BreakerState, CircuitBreaker, Step, TokenBucket, Verdict
from engine.metrics import NULL_METRICS
from engine.settings import DispatchSettings
from tests.virtual_clock import VirtualClock

START = 1_700_000_000.0


class RecordingMetrics:
    def __init__(self) -> None:
        self.errors: list[tuple[str, str]] = []
        self.breakers: list[tuple[str, str]] = []

    def job_finished(self, backend: str, state: str, seconds: float) -> None:
        raise AssertionError("a gate knows no jobs")

    def spend(self, backend: str, usd: float) -> None:
        raise AssertionError("a gate knows no jobs")

    def provider_error(self, backend: str, kind: str) -> None:
        self.errors.append((backend, str(kind)))

    def breaker_state(self, backend: str, state: str) -> None:
        self.breakers.append((backend, str(state)))


def gate(
    clock: VirtualClock, metrics: RecordingMetrics | None = None, **settings: object
) -> tuple[BackendGate, CircuitBreaker]:
    values = DispatchSettings(**settings)  # type: ignore[arg-type]
    breaker = CircuitBreaker(values.breaker_threshold, values.breaker_cooldown_s, clock)
    sink = NULL_METRICS if metrics is None else metrics
    return BackendGate("fal-flux-pulid", values, breaker=breaker, clock=clock, metrics=sink), breaker


def test_breaker_opens_after_threshold_then_lets_one_trial_through() -> None:
    clock = VirtualClock()
    breaker = CircuitBreaker(threshold=3, cooldown_s=60, clock=clock)
    for _ in range(2):
        breaker.failure()
    assert breaker.state is BreakerState.CLOSED and breaker.allows()
    breaker.failure()
    assert breaker.state is BreakerState.OPEN and not breaker.allows()
    clock.advance(60)
    assert breaker.state is BreakerState.HALF_OPEN and breaker.allows()
    breaker.begin()
    assert not breaker.allows()  # one trial at a time
    breaker.failure()  # the trial failed: open again for a full cooldown
    assert breaker.state is BreakerState.OPEN
    clock.advance(60)
    breaker.begin()
    breaker.success()
    assert breaker.state is BreakerState.CLOSED and breaker.failures == 0


async def test_token_bucket_spaces_submits_to_the_configured_rate() -> None:
    clock = VirtualClock()
    bucket = TokenBucket(per_minute=2, clock=clock)
    for _ in range(4):
        await bucket.take()
    # One token at the start, then one every 30 s: 4 submits need 90 s.
    assert clock.now - START == 90.0
    assert clock.sleeps == [30.0, 30.0, 30.0]


def test_transient_failures_back_off_exponentially_then_fail_over() -> None:
    clock = VirtualClock(jitter=1.0)
    backend, _ = gate(clock, tries_per_backend=3, backoff_base_s=1.0)
    error = TransientError("503")
    assert backend.failed(error, tries=1, can_requeue=True) == Verdict(Step.RETRY, 1.0)
    assert backend.failed(error, tries=2, can_requeue=True) == Verdict(Step.RETRY, 2.0)
    assert backend.failed(error, tries=3, can_requeue=True) == Verdict(Step.FAIL_OVER)


def test_backoff_uses_equal_jitter_and_its_cap() -> None:
    clock = VirtualClock(jitter=0.0)
    backend, _ = gate(clock, tries_per_backend=10, backoff_base_s=1.0, backoff_cap_s=30, breaker_threshold=100)
    delays = [backend.failed(TransientError("503"), tries=n, can_requeue=False).delay_s for n in range(1, 8)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 15.0]  # never less than half the step


def test_retry_after_is_a_lower_bound_and_a_long_wait_goes_back_to_the_queue() -> None:
    clock = VirtualClock(jitter=0.5)
    backend, _ = gate(clock, requeue_after_s=10)
    assert backend.failed(TransientError("429", retry_after=7), tries=1, can_requeue=True) == Verdict(Step.RETRY, 7.0)
    assert backend.failed(TransientError("429", retry_after=60), tries=1, can_requeue=True) == Verdict(
        Step.REQUEUE, 60.0
    )
    # On its last attempt the job has no queue to go back to: it waits here.
    assert backend.failed(TransientError("429", retry_after=60), tries=1, can_requeue=False) == Verdict(
        Step.RETRY, 60.0
    )


@pytest.mark.parametrize("error", [OutOfCreditError("402"), AuthError("401")])
def test_an_unusable_backend_opens_its_circuit_at_once(error: BackendError) -> None:
    clock = VirtualClock()
    metrics = RecordingMetrics()
    backend, breaker = gate(clock, metrics, out_of_credit_cooldown_s=600, breaker_threshold=5)
    assert backend.failed(error, tries=1, can_requeue=True) == Verdict(Step.FAIL_OVER, circuit_opened=True)
    assert breaker.state is BreakerState.OPEN
    clock.advance(599)
    assert breaker.state is BreakerState.OPEN
    clock.advance(1)
    assert breaker.state is BreakerState.HALF_OPEN
    assert metrics.errors == [("fal-flux-pulid", str(error.kind))]
    assert metrics.breakers == [("fal-flux-pulid", "open")]


@pytest.mark.parametrize(
    "error",
    [ContentPolicyError("nsfw"), InvalidInputError("422"), NoFaceError("no face"), UnknownOutcomeError("timeout")],
)
def test_failures_of_the_job_itself_stop_without_counting_against_the_backend(error: BackendError) -> None:
    backend, breaker = gate(VirtualClock(), breaker_threshold=1)
    assert backend.failed(error, tries=1, can_requeue=True) == Verdict(Step.STOP)
    assert breaker.state is BreakerState.CLOSED and breaker.failures == 0


@pytest.mark.parametrize("error", [ProviderFailedError("failed"), ProtocolError("garbled")])
def test_other_failures_fail_over_and_count_against_the_backend(error: BackendError) -> None:
    backend, breaker = gate(VirtualClock(), breaker_threshold=2)
    assert backend.failed(error, tries=1, can_requeue=True) == Verdict(Step.FAIL_OVER)
    assert breaker.failures == 1 and breaker.state is BreakerState.CLOSED


def test_a_circuit_that_opens_during_retries_fails_over_at_once() -> None:
    clock = VirtualClock(jitter=1.0)
    metrics = RecordingMetrics()
    backend, breaker = gate(clock, metrics, breaker_threshold=2, tries_per_backend=5)
    assert backend.failed(TransientError("503"), tries=1, can_requeue=True).step is Step.RETRY
    assert backend.failed(TransientError("503"), tries=2, can_requeue=True) == Verdict(Step.FAIL_OVER)
    assert breaker.state is BreakerState.OPEN
    assert metrics.breakers == [("fal-flux-pulid", "closed"), ("fal-flux-pulid", "open")]
    backend.succeeded()
    assert breaker.state is BreakerState.CLOSED and metrics.breakers[-1] == ("fal-flux-pulid", "closed")


def test_a_request_the_provider_holds_is_resumed_through_an_open_circuit_then_from_the_queue() -> None:
    clock = VirtualClock(jitter=1.0)
    backend, breaker = gate(clock, breaker_threshold=1, tries_per_backend=3)
    error = TransientError("503 while polling")
    # The circuit guards new submits; resuming a request the provider already has sends none.
    assert backend.failed(error, tries=1, can_requeue=True, accepted=True) == Verdict(Step.RETRY, 1.0)
    assert breaker.state is BreakerState.OPEN
    assert backend.failed(error, tries=2, can_requeue=True, accepted=True) == Verdict(Step.RETRY, 2.0)
    # Out of tries here: back to the queue to resume the same request later, or the job ends; never elsewhere.
    assert backend.failed(error, tries=3, can_requeue=True, accepted=True) == Verdict(Step.REQUEUE, 4.0)
    assert backend.failed(error, tries=3, can_requeue=False, accepted=True) == Verdict(Step.STOP)
    assert backend.failed(error, tries=1, can_requeue=True, time_left_s=0.5, accepted=True) == Verdict(Step.STOP)


@pytest.mark.parametrize(
    ("error", "step"),
    [
        (ProtocolError("output is no image"), Step.STOP),
        (OutputExpiredError("gone"), Step.STOP),
        (AuthError("401 while polling"), Step.STOP),
        (ProviderFailedError("the provider says the job failed"), Step.FAIL_OVER),
    ],
)
def test_after_the_provider_took_the_job_only_its_own_failure_lets_it_move_on(error: BackendError, step: Step) -> None:
    # Another backend would render and bill the job a second time while the provider may still finish it.
    backend, _ = gate(VirtualClock())
    assert backend.failed(error, tries=1, can_requeue=True, accepted=True).step is step


async def test_slots_bound_the_tries_in_flight() -> None:
    backend, _ = gate(VirtualClock(), backend_concurrency={"fal-flux-pulid": 2})
    inside = 0
    most = 0

    async def one_try() -> None:
        nonlocal inside, most
        async with backend.admit(resuming=False):
            inside += 1
            most = max(most, inside)
            for _ in range(3):
                await asyncio.sleep(0)
            inside -= 1

    await asyncio.gather(*(one_try() for _ in range(6)))
    assert most == 2


async def test_only_new_submits_wait_for_a_rate_token() -> None:
    clock = VirtualClock()
    backend, _ = gate(clock, rate_per_minute={"fal-flux-pulid": 6})
    for _ in range(3):
        async with backend.admit(resuming=False):
            pass
    assert clock.now - START == 20.0  # one token at once, then one every 10 s
    for _ in range(3):
        async with backend.admit(resuming=True):  # polling a request already paid for takes no token
            pass
    assert clock.now - START == 20.0


async def test_a_try_after_the_cooldown_is_the_one_trial() -> None:
    clock = VirtualClock()
    backend, breaker = gate(clock, breaker_threshold=1, breaker_cooldown_s=60)
    backend.failed(ProviderFailedError("failed"), tries=1, can_requeue=True)
    clock.advance(60)
    async with backend.admit(resuming=False):
        assert breaker.trial_running and not breaker.allows()  # a second job waits for the trial's outcome
    backend.succeeded()
    assert breaker.state is BreakerState.CLOSED and breaker.allows()


def test_a_wait_that_would_outlast_the_jobs_deadline_gives_the_backend_up() -> None:
    clock = VirtualClock(jitter=0.5)
    backend, _ = gate(clock, requeue_after_s=10, tries_per_backend=5, breaker_threshold=100)
    long_wait = TransientError("429", retry_after=3600)
    # No deadline: the wait is spent in the queue, however long.
    assert backend.failed(long_wait, tries=1, can_requeue=True) == Verdict(Step.REQUEUE, 3600.0)
    # Ten minutes left: waiting an hour would only hold the credits past the deadline. Another backend may
    # serve the job now; with none left, it fails and is refunded at once.
    assert backend.failed(long_wait, tries=1, can_requeue=True, time_left_s=600) == Verdict(Step.FAIL_OVER)
    assert backend.failed(long_wait, tries=1, can_requeue=False, time_left_s=600) == Verdict(Step.FAIL_OVER)
    # A wait that ends before the deadline is kept, in the queue or here.
    assert backend.failed(TransientError("429", retry_after=60), tries=1, can_requeue=True, time_left_s=600) == (
        Verdict(Step.REQUEUE, 60.0)
    )
    assert backend.failed(TransientError("503"), tries=2, can_requeue=True, time_left_s=600) == Verdict(Step.RETRY, 1.5)
    assert backend.failed(TransientError("503"), tries=2, can_requeue=True, time_left_s=1.0) == Verdict(Step.FAIL_OVER)
