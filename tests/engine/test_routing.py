"""Circuit breakers, the submit rate limiter and the router's choice of backends."""

from __future__ import annotations

from engine.capabilities import Capabilities, Range
from engine.dispatch import TokenBucket
from engine.request import GenerationRequest
from engine.routing import BreakerState, CircuitBreaker, Router
from tests.fakes.providers_common import VirtualClock


def test_breaker_opens_after_threshold_then_lets_one_trial_through() -> None:
    clock = VirtualClock()
    breaker = CircuitBreaker(threshold=3, cooldown_s=60, clock=clock.now)
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
    bucket = TokenBucket(per_minute=2, clock=clock.now, sleep=clock.sleep)
    for _ in range(4):
        await bucket.take()
    # One token at the start, then one every 30 s: 4 submits need 90 s.
    assert clock.now() - 1000.0 == 90.0


class _Stub:
    def __init__(self, name: str, steps: int, reason: str | None = None) -> None:
        self.name = name
        self.capabilities = Capabilities(
            limits={"steps": Range(1, steps, 10, integer=True), "num_images": Range(1, 4, 1, integer=True)}
        )
        self._reason = reason

    def unavailable_reason(self) -> str | None:
        return self._reason

    async def generate(self, request: object, progress: object) -> object:
        raise NotImplementedError


def test_router_keeps_route_order_and_skips_what_cannot_serve() -> None:
    backends = {"a": _Stub("a", 20), "b": _Stub("b", 50), "c": _Stub("c", 50, reason="no key")}
    router = Router(backends, ["a", "b", "c"], {name: CircuitBreaker(1, 60) for name in backends})  # type: ignore[arg-type]
    plain = GenerationRequest(prompt="x", faces=(b"f",))
    assert [b.name for b in router.candidates(plain)] == ["a", "b"]
    many_steps = GenerationRequest(prompt="x", faces=(b"f",), steps=40)
    assert [b.name for b in router.candidates(many_steps)] == ["b"]
    router.breakers["b"].failure()
    refusal = router.refusal(many_steps)
    assert refusal is not None
    assert [(p.backend, p.parameter) for p in refusal.problems] == [("a", "steps")]
    assert refusal.unavailable == ("b: temporarily failing", "c: no key")
