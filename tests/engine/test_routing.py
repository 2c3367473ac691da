"""The router's choice of backends: route order, capabilities, keys and open circuits."""

from __future__ import annotations

from engine.capabilities import Capabilities, Range
from engine.gate import CircuitBreaker
from engine.request import GenerationRequest
from engine.routing import Router


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
