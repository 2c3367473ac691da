"""One kit per provider backend: what the contract suite needs to drive each backend and its fake alike."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import aiohttp
from pydantic import SecretStr

from engine.providers.client import RetryPolicy, Timeouts
from engine.providers.fal import FalFluxPulidBackend, FalPulidBackend
from engine.providers.remote import PollSchedule, RemoteBackend
from engine.providers.replicate import ReplicateFluxPulidBackend
from engine.providers.segmind import SegmindFluxPulidBackend
from engine.providers.settings import FalSettings, ReplicateSettings, SegmindSettings, WaveSpeedSettings
from engine.providers.wavespeed import WaveSpeedFluxPulidBackend
from engine.request import GenerationRequest
from tests.fakes import fal, replicate, segmind, wavespeed
from tests.fakes.providers_common import FakeProvider, Fault, tiny_image
from tests.virtual_clock import VirtualClock

FACE = tiny_image("jpeg", (32, 32))
NSFW_MESSAGE = "NSFW content detected. Try running it again, or try a different prompt."

AnyBackend = RemoteBackend[Any, Any]

# Short real timeouts: a hanging fake must trip them within a fraction of a second.
TIMEOUTS = Timeouts(request_s=0.5, submit_s=0.3, connect_s=0.3, download_s=0.5, cancel_s=0.5)
RETRY = RetryPolicy(attempts=4, base_delay_s=0.5, max_delay_s=8.0)


@dataclass
class Kit(ABC):
    """A provider backend under test with its fake server, the virtual clock and a shared session."""

    fake: FakeProvider
    session: aiohttp.ClientSession
    clock: VirtualClock

    name: ClassVar[str]
    key: ClassVar[str]
    submit_route: ClassVar[str]
    poll_route: ClassVar[str | None]  # None: a synchronous provider, nothing to poll
    cancel_route: ClassVar[str | None]  # None: the provider offers no cancel
    polls_to_finish: ClassVar[int] = 0  # status polls a job takes on the fake's default script
    key_field: ClassVar[str] = "key"
    backend_class: ClassVar[type[AnyBackend]]
    settings_class: ClassVar[Any]

    def backend(
        self,
        *,
        key: str | None = None,
        timeouts: Timeouts = TIMEOUTS,
        schedule: PollSchedule | None = None,
        retry: RetryPolicy = RETRY,
        **settings: Any,
    ) -> AnyBackend:
        values: dict[str, Any] = {"base_url": self.fake.url, self.key_field: SecretStr(key or self.key), **settings}
        return self.backend_class(
            self.session,
            self.settings_class.model_validate(values),
            clock=self.clock,
            retry=retry,
            timeouts=timeouts,
            schedule=schedule,
        )

    def unconfigured(self) -> AnyBackend:
        return self.backend_class(self.session, self.settings_class(base_url=self.fake.url), clock=self.clock)

    @property
    def synchronous(self) -> bool:
        return self.poll_route is None

    def request(self, **params: Any) -> GenerationRequest:
        return GenerationRequest(prompt="a portrait in the rain", faces=(FACE,), **params)

    def submits(self) -> int:
        """Submit calls the fake received, whatever it answered."""
        return len(self.fake.requests(self.submit_route))

    def polls(self) -> int:
        return len(self.fake.requests(self.poll_route)) if self.poll_route else 0

    def cancels(self) -> int:
        return len(self.fake.requests(self.cancel_route)) if self.cancel_route else 0

    @abstractmethod
    def error(self, status: int, message: str, headers: dict[str, str] | None = None) -> Fault:
        """An error answer in the provider's own body shape."""

    @abstractmethod
    def out_of_credit(self) -> None:
        """Make the fake's account run dry."""

    @abstractmethod
    def refuse_content(self) -> None:
        """Make the next job end the way the provider reports a content-policy refusal."""

    @abstractmethod
    def stick(self) -> None:
        """Make the next job never finish."""

    @abstractmethod
    def invalid_request(self) -> GenerationRequest:
        """A request the backend sends as asked but the provider's own schema refuses."""

    def cancelled_at_provider(self, request_id: str) -> bool:
        return False


class FalKit(Kit):
    key = fal.KEY
    submit_route = "submit"
    poll_route = "status"
    cancel_route = "cancel"
    polls_to_finish = 4  # IN_QUEUE twice, IN_PROGRESS, COMPLETED
    settings_class = FalSettings

    @property
    def fal(self) -> fal.FakeFal:
        assert isinstance(self.fake, fal.FakeFal)
        return self.fake

    def error(self, status: int, message: str, headers: dict[str, str] | None = None) -> Fault:
        return Fault(status=status, json={"detail": message}, headers=headers or {})

    def out_of_credit(self) -> None:
        self.fal.locked = True

    def refuse_content(self) -> None:
        self.fal.script = fal.FalScript(
            outcome=fal.FalOutcome.ERROR, error_type="content_policy_violation", error_message=NSFW_MESSAGE
        )

    def stick(self) -> None:
        self.fal.script = fal.FalScript(outcome=fal.FalOutcome.STUCK)

    def cancelled_at_provider(self, request_id: str) -> bool:
        return self.fal.jobs[request_id].cancelled


class FalFluxPulidKit(FalKit):
    name = "fal-flux-pulid"
    backend_class = FalFluxPulidBackend

    def invalid_request(self) -> GenerationRequest:
        return self.request(id_weight=2.0)


class FalPulidKit(FalKit):
    name = "fal-pulid"
    backend_class = FalPulidBackend

    def invalid_request(self) -> GenerationRequest:
        return self.request(guidance=25.0)


class ReplicateKit(Kit):
    name = "replicate-flux-pulid"
    key = replicate.TOKEN
    key_field = "token"
    submit_route = "create"
    poll_route = "get"
    cancel_route = "cancel"
    polls_to_finish = 3  # starting, processing, succeeded
    backend_class = ReplicateFluxPulidBackend
    settings_class = ReplicateSettings

    @property
    def replicate(self) -> replicate.FakeReplicate:
        assert isinstance(self.fake, replicate.FakeReplicate)
        return self.fake

    def backend(self, **kw: Any) -> AnyBackend:
        kw.setdefault("version", f"bytedance/flux-pulid:{replicate.VERSION}")
        return super().backend(**kw)

    def error(self, status: int, message: str, headers: dict[str, str] | None = None) -> Fault:
        body = {"title": message, "detail": message, "status": status}
        return Fault(status=status, json=body, content_type="application/problem+json", headers=headers or {})

    def out_of_credit(self) -> None:
        self.replicate.out_of_credit = True

    def refuse_content(self) -> None:
        self.replicate.script = replicate.ReplicateScript(outcome=replicate.ReplicateOutcome.FAILED, error=NSFW_MESSAGE)

    def stick(self) -> None:
        self.replicate.script = replicate.ReplicateScript(stuck=True)

    def invalid_request(self) -> GenerationRequest:
        return self.request(steps=40)

    def cancelled_at_provider(self, request_id: str) -> bool:
        return self.replicate.predictions[request_id].status == "canceled"


class WaveSpeedKit(Kit):
    name = "wavespeed-flux-pulid"
    key = wavespeed.KEY
    submit_route = "submit"
    poll_route = "result"
    cancel_route = None
    polls_to_finish = 3  # created, processing, completed
    backend_class = WaveSpeedFluxPulidBackend
    settings_class = WaveSpeedSettings

    @property
    def wavespeed(self) -> wavespeed.FakeWaveSpeed:
        assert isinstance(self.fake, wavespeed.FakeWaveSpeed)
        return self.fake

    def error(self, status: int, message: str, headers: dict[str, str] | None = None) -> Fault:
        return Fault(status=status, json=wavespeed.envelope(None, status, message), headers=headers or {})

    def out_of_credit(self) -> None:
        self.wavespeed.out_of_credit = True

    def refuse_content(self) -> None:
        self.wavespeed.script = wavespeed.WaveSpeedScript(outcome=wavespeed.WaveSpeedOutcome.FAILED, error=NSFW_MESSAGE)

    def stick(self) -> None:
        self.wavespeed.script = wavespeed.WaveSpeedScript(stuck=True)

    def invalid_request(self) -> GenerationRequest:
        return self.request(width=2048)


class SegmindKit(Kit):
    name = "segmind-flux-pulid"
    key = segmind.KEY
    submit_route = "generate"
    poll_route = None
    cancel_route = None
    backend_class = SegmindFluxPulidBackend
    settings_class = SegmindSettings

    @property
    def segmind(self) -> segmind.FakeSegmind:
        assert isinstance(self.fake, segmind.FakeSegmind)
        return self.fake

    def error(self, status: int, message: str, headers: dict[str, str] | None = None) -> Fault:
        return Fault(status=status, json={"error": message}, headers=headers or {})

    def out_of_credit(self) -> None:
        self.segmind.credits = 0

    def refuse_content(self) -> None:
        self.fake.fail(self.submit_route, self.error(400, "Prompt flagged by the NSFW filter"))

    def stick(self) -> None:
        self.fake.fail(self.submit_route, Fault(passthrough=True, hang_s=30))

    def invalid_request(self) -> GenerationRequest:
        return self.request(steps=30)


KITS: dict[str, tuple[type[Kit], type[FakeProvider]]] = {
    "fal-flux-pulid": (FalFluxPulidKit, fal.FakeFal),
    "fal-pulid": (FalPulidKit, fal.FakeFal),
    "replicate-flux-pulid": (ReplicateKit, replicate.FakeReplicate),
    "wavespeed-flux-pulid": (WaveSpeedKit, wavespeed.FakeWaveSpeed),
    "segmind-flux-pulid": (SegmindKit, segmind.FakeSegmind),
}
POLLED = [name for name, (kit, _) in KITS.items() if kit.poll_route is not None]
CANCELLABLE = [name for name, (kit, _) in KITS.items() if kit.cancel_route is not None]
