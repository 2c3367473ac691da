"""One backend's admission and retry policy: its slots, submit rate, circuit breaker and backoff decisions."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import StrEnum

from engine.clock import SYSTEM_CLOCK, Clock, backoff_delay
from engine.errors import BackendError, FailureKind, TransientError
from engine.metrics import NULL_METRICS, JobMetrics
from engine.settings import DispatchSettings

# Failures that are about the request itself: another backend would refuse it too.
USER_FAILURES = frozenset({FailureKind.CONTENT_POLICY, FailureKind.INVALID_INPUT, FailureKind.NO_FACE})
# Failures that say the backend, not the job, is broken: its circuit opens at once.
BACKEND_DOWN = frozenset({FailureKind.OUT_OF_CREDIT, FailureKind.AUTH})


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Opens after ``threshold`` consecutive failures; after ``cooldown`` lets one trial through."""

    def __init__(self, threshold: int, cooldown_s: float, clock: Clock = SYSTEM_CLOCK) -> None:
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
        if self.clock.monotonic() - self.opened_at >= self.open_for:
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
        self.opened_at, self.open_for, self.trial_running = self.clock.monotonic(), seconds, False


class TokenBucket:
    """Submits per minute for one backend; ``take`` waits for a token."""

    def __init__(self, per_minute: float, clock: Clock = SYSTEM_CLOCK) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, per_minute / 60.0)
        self.tokens = self.capacity
        self.clock = clock
        self.updated = clock.monotonic()

    async def take(self) -> None:
        while True:
            now = self.clock.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
            if self.tokens >= 1:
                self.tokens -= 1
                return
            await self.clock.sleep((1 - self.tokens) / self.rate)


class Step(StrEnum):
    """What to do after a backend failed one try."""

    RETRY = "retry"  # wait ``delay_s`` here, then try the same backend again
    REQUEUE = "requeue"  # the wait is too long to hold a slot and a lease: back to the queue, due after it
    FAIL_OVER = "fail_over"  # give this backend up; the next one of the route may serve the job
    STOP = "stop"  # the failure is the job's own (or a submit may have been billed): no other backend


@dataclass(frozen=True)
class Verdict:
    step: Step
    delay_s: float = 0.0
    circuit_opened: bool = False  # the backend is unusable for a while (empty account, bad key)


class BackendGate:
    """Everything one backend's tries pass through: a slot (concurrency), a submit token (rate), the
    circuit breaker the router reads, and the decision after a failure. Holds no job and no database."""

    def __init__(
        self,
        name: str,
        settings: DispatchSettings,
        *,
        breaker: CircuitBreaker | None = None,
        clock: Clock = SYSTEM_CLOCK,
        metrics: JobMetrics = NULL_METRICS,
    ) -> None:
        self.name = name
        self.breaker = breaker
        self._settings = settings
        self._clock = clock
        self._metrics = metrics
        self._slots = asyncio.Semaphore(settings.backend_concurrency.get(name, settings.default_backend_concurrency))
        rate = settings.rate_per_minute.get(name, 0.0)
        self._bucket = TokenBucket(rate, clock) if rate > 0 else None

    @contextlib.asynccontextmanager
    async def admit(self, *, resuming: bool) -> AsyncIterator[None]:
        """Hold one of the backend's slots for a try. Only a new submit waits for a rate token: resuming a
        request the provider already has costs no submit."""
        async with self._slots:
            if self._bucket is not None and not resuming:
                await self._bucket.take()
            if self.breaker is not None:
                self.breaker.begin()
            yield

    def succeeded(self) -> None:
        if self.breaker is not None:
            self.breaker.success()
            self._report_breaker()

    def failed(
        self,
        error: BackendError,
        *,
        tries: int,
        can_requeue: bool,
        time_left_s: float | None = None,
        accepted: bool = False,
    ) -> Verdict:
        """Count the failure of try number ``tries`` and decide what comes next. ``can_requeue``: the job
        has attempts left, so a long wait can be spent in the queue instead of here. ``time_left_s``: until
        the job's deadline (None: it has none); no wait this decides reaches past it.

        ``accepted``: the provider holds the job's request (its id is stored). Another backend would then
        render, and bill, the job a second time, so the job moves on only when the provider itself ended the
        request (PROVIDER_FAILED); a passing failure resumes the same request, here or from the queue, whatever
        the circuit says (resuming sends no submit); any other failure ends the job.
        """
        self._metrics.provider_error(self.name, error.kind)
        give_up = Step.STOP if accepted else Step.FAIL_OVER
        if error.kind in BACKEND_DOWN and self.breaker is not None:
            self.breaker.open(self._settings.out_of_credit_cooldown_s)
            self._report_breaker()
            return Verdict(give_up, circuit_opened=True)
        if error.kind in USER_FAILURES or error.kind is FailureKind.UNKNOWN_OUTCOME:
            return Verdict(Step.STOP)
        if self.breaker is not None:
            self.breaker.failure()
            self._report_breaker()
        if not isinstance(error, TransientError):
            return Verdict(Step.FAIL_OVER if error.kind is FailureKind.PROVIDER_FAILED else give_up)
        if not accepted and tries >= self._settings.tries_per_backend:
            return Verdict(Step.FAIL_OVER)
        if not accepted and self.breaker is not None and not self.breaker.allows():
            return Verdict(Step.FAIL_OVER)
        delay = backoff_delay(
            tries,
            base_s=self._settings.backoff_base_s,
            cap_s=self._settings.backoff_cap_s,
            jitter=self._clock.jitter(),
            retry_after_s=error.retry_after,
        )
        if time_left_s is not None and delay >= time_left_s:
            # The job would wait out its deadline with its credits held: this backend cannot serve it in
            # time. The next one may serve it now; with none left it fails, refunded, at once.
            return Verdict(give_up)
        if accepted and tries >= self._settings.tries_per_backend:
            # The request stays with the provider: the job resumes it from the queue, or ends.
            return Verdict(Step.REQUEUE, delay) if can_requeue else Verdict(Step.STOP)
        if delay > self._settings.requeue_after_s and can_requeue:
            return Verdict(Step.REQUEUE, delay)
        return Verdict(Step.RETRY, delay)

    def _report_breaker(self) -> None:
        assert self.breaker is not None
        self._metrics.breaker_state(self.name, self.breaker.state)
