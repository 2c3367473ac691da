"""The remote-job lifecycle every provider backend shares: submit once, record, poll, collect, cancel."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

import aiohttp

from engine.backend import GenerationResult, Progress, ProviderRef, Stage
from engine.capabilities import Capabilities
from engine.clock import SYSTEM_CLOCK, Clock
from engine.errors import (
    AuthError,
    BackendError,
    InvalidInputError,
    ProtocolError,
    ProviderFailedError,
    UnknownOutcomeError,
)
from engine.providers.client import ProviderHttp, RetryPolicy, Timeouts
from engine.providers.failures import MalformedReplyError, VendorRules, job_failure, no_vendor_rules
from engine.providers.settings import ProviderSettings, reveal
from engine.request import GenerationRequest

log = logging.getLogger(__name__)

SettingsT = TypeVar("SettingsT", bound=ProviderSettings)
DoneT = TypeVar("DoneT")


@dataclass(frozen=True)
class Vendor:
    """Who a backend talks to: its name in logs, where its key is set, how calls carry it, its own rules."""

    label: str  # in logs and error details, e.g. "fal"
    title: str  # in operator messages, e.g. "fal.ai"
    key_setting: str  # e.g. "LIKENESS_FAL__KEY"
    auth_header: str = "Authorization"
    auth_scheme: str = "Bearer"  # empty: the header carries the bare key
    rules: VendorRules = no_vendor_rules

    def auth(self, key: str) -> dict[str, str]:
        return {self.auth_header: f"{self.auth_scheme} {key}" if self.auth_scheme else key}

    def no_key(self) -> str:
        word = self.key_setting.rsplit("__", 1)[-1].lower()
        return f"no {self.title} {word} configured ({self.key_setting})"


@dataclass(frozen=True)
class PollSchedule:
    """Gaps between status polls: ``first_s`` growing by ``factor`` up to ``max_s``, never below ``min_s``."""

    first_s: float = 1.0
    factor: float = 1.0
    max_s: float = 5.0
    min_s: float = 0.0
    max_wait_s: float = 900.0  # give up (and cancel at the provider) after this long

    def interval(self, poll: int) -> float:
        return max(self.min_s, min(self.max_s, self.first_s * self.factor**poll))


class WaitExceededError(ProviderFailedError):
    """The provider did not finish within the backend's polling budget."""


@dataclass(frozen=True)
class Pending:
    """A poll's answer while the provider still works: its own status word and what that means here."""

    status: str
    stage: Stage | None = None  # None: a status this backend does not know; logged, and polling goes on
    queue_position: int | None = None


@dataclass(frozen=True)
class JobStates:
    """A provider's words for where a job stands: still working (and what that means to the user), done."""

    working: Mapping[str, Stage]
    succeeded: str
    failed: str  # ended with the provider's own error message
    ended: Mapping[str, str] = field(default_factory=dict)  # every other end, with what it means

    def done(self, status: str) -> bool:
        return status in (self.succeeded, self.failed) or status in self.ended


def value_or_default(capabilities: Capabilities, request: GenerationRequest, name: str) -> Any:
    """The request's value for ``name``, or the backend's documented default when the user left it unset."""
    value = getattr(request, name)
    return capabilities.default(name) if value is None else value


def seed_text(request: GenerationRequest) -> str | None:
    """The seed a result reports when the provider does not say which it used."""
    return None if request.seed is None else str(request.seed)


class RemoteBackend(ABC, Generic[SettingsT, DoneT]):
    """A backend that renders at a provider. A provider module says only what differs: how a request becomes
    arguments, how to submit them, one poll, how to collect the outputs, how to cancel, and its own rules.

    ``DoneT`` is what the last poll returns (or, for a synchronous provider, the submit itself): the
    provider's final answer, handed to ``collect``.
    """

    name: str
    capabilities: Capabilities
    vendor: ClassVar[Vendor]
    retry_policy: ClassVar[RetryPolicy] = RetryPolicy()
    poll_schedule: ClassVar[PollSchedule] = PollSchedule()
    min_poll_gap_s: ClassVar[float] = 0.0  # some providers ask for a minimum gap between calls
    wait_before_first_poll: ClassVar[bool] = False
    # The submit answers with the images: there is no request id to store, so nothing to resume.
    synchronous: ClassVar[bool] = False

    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: SettingsT,
        *,
        clock: Clock = SYSTEM_CLOCK,
        retry: RetryPolicy | None = None,
        timeouts: Timeouts | None = None,
        schedule: PollSchedule | None = None,
    ) -> None:
        self.settings = settings
        retry = retry or self.retry_policy
        schedule = schedule or self.poll_schedule
        if self.min_poll_gap_s:
            # Retries of a poll are polls too: the minimum gap applies to them as well.
            retry = dataclasses.replace(retry, min_delay_s=max(retry.min_delay_s, self.min_poll_gap_s))
            schedule = dataclasses.replace(schedule, min_s=max(schedule.min_s, self.min_poll_gap_s))
        self.schedule = schedule
        key = reveal(settings.secret)
        self.http = ProviderHttp(
            session,
            self.vendor.label,
            base_url=settings.base_url,
            auth=self.vendor.auth(key),
            secrets=[key],
            clock=clock,
            retry=retry,
            timeouts=timeouts,
            rules=self.vendor.rules,
        )

    # -- what a provider module supplies ----------------------------------------------------------------

    @abstractmethod
    async def arguments(self, request: GenerationRequest) -> dict[str, Any]:
        """The provider's wire arguments for ``request`` (uploading the face first where it must)."""

    @abstractmethod
    async def submit(self, arguments: dict[str, Any]) -> ProviderRef | DoneT:
        """Send the job once: the reference to follow it by, or a synchronous provider's final answer.

        A MalformedReplyError raised here means the provider took the job but its answer cannot be read.
        """

    async def poll(self, ref: ProviderRef) -> Pending | DoneT:
        """Check a submitted request once: Pending, or the final answer."""
        raise NotImplementedError(f"{self.name} answers its submit at once: there is nothing to poll")

    @abstractmethod
    async def collect(self, done: DoneT, request: GenerationRequest) -> GenerationResult:
        """Turn the final answer into images (downloaded at once: providers delete outputs), seed and spend."""

    def cancel_call(self, ref: ProviderRef) -> tuple[str, str] | None:
        """The method and URL that cancel ``ref`` at the provider; None where the provider offers none."""
        return None

    # -- the lifecycle ---------------------------------------------------------------------------------

    def value(self, request: GenerationRequest, name: str) -> Any:
        return value_or_default(self.capabilities, request, name)

    def unavailable_reason(self) -> str | None:
        return self.vendor.no_key() if self.settings.secret is None else None

    def settled(self, states: JobStates, status: str, *, where: str, error: str | None) -> Pending | None:
        """Pending while the job works, None once it has succeeded; raises for every other end."""
        if not states.done(status):
            return Pending(status, states.working.get(status))
        if status == states.failed:
            raise self.reported_failure(where, error)
        if status != states.succeeded:
            raise ProviderFailedError(f"{where} {states.ended[status]}")
        return None

    def reported_failure(self, where: str, error: str | None) -> BackendError:
        """The error for a job the provider says has failed, classified by the provider's own words."""
        message = self.http.clean(error or "")
        return job_failure(message, f"{where} failed: {message or 'no message'}")

    async def generate(self, request: GenerationRequest, progress: Progress) -> GenerationResult:
        reason = self.unavailable_reason()
        if reason is not None:
            raise AuthError(reason)
        ref = progress.resume
        if ref is not None:
            self._check_resumable(ref)
        else:
            if not request.faces:
                raise InvalidInputError("no face photo given")
            arguments = await self.arguments(request)
            if self.synchronous:
                await progress.update(Stage.RUNNING)
            await progress.submitting()
            submitted = await self._submit(arguments)
            if not isinstance(submitted, ProviderRef):
                return await self._collect_answer(submitted, request)
            ref = submitted
            await self._record(ref, progress)
        try:
            return await self.collect(await self._wait(ref, progress), request)
        except asyncio.CancelledError:
            if not progress.abandoned:
                await self._cancel(ref)
            raise
        except WaitExceededError:
            await self._cancel(ref)
            raise

    def _check_resumable(self, ref: ProviderRef) -> None:
        if self.synchronous:
            raise UnknownOutcomeError(
                f"{self.name}: a synchronous call cannot be resumed; the earlier attempt may have been billed"
            )
        if ref.backend != self.name:
            raise ProviderFailedError(f"{self.name} cannot resume a {ref.backend} request")

    async def _submit(self, arguments: dict[str, Any]) -> ProviderRef | DoneT:
        try:
            return await self.submit(arguments)
        except MalformedReplyError as exc:
            # The provider took the job but its answer cannot be followed: like a submit that got no answer,
            # it is neither sent again nor sent to another backend.
            raise UnknownOutcomeError(f"{exc.detail}; the job was accepted and may be billed") from None

    async def _collect_answer(self, answer: DoneT, request: GenerationRequest) -> GenerationResult:
        """A synchronous provider's answer: it did (and billed) the work, so an answer that cannot be read ends
        the job as a submit without an answer does: never sent again, nor to another backend."""
        try:
            return await self.collect(answer, request)
        except ProtocolError as exc:
            raise UnknownOutcomeError(f"{exc.detail}; the job was accepted and may be billed") from None

    async def _record(self, ref: ProviderRef, progress: Progress) -> None:
        log.info("%s submitted request %s", self.name, ref.request_id)
        try:
            await progress.submitted(ref)
        except asyncio.CancelledError:
            if not progress.abandoned:
                await self._cancel(ref)
            raise

    async def _wait(self, ref: ProviderRef, progress: Progress) -> DoneT:
        """Poll until the final answer, reporting each change of status; bounded by the schedule."""
        clock = self.http.clock
        started = clock.monotonic()
        last: Pending | None = None
        polls = 0
        if self.wait_before_first_poll:
            await clock.sleep(self.schedule.interval(0))
        while True:
            answer = await self.poll(ref)
            if not isinstance(answer, Pending):
                return answer
            if answer != last:
                last = answer
                if answer.stage is None:
                    log.warning("%s request %s: unknown status %r", self.name, ref.request_id, answer.status)
                else:
                    await progress.update(answer.stage, queue_position=answer.queue_position)
            if clock.monotonic() - started >= self.schedule.max_wait_s:
                raise WaitExceededError(f"{self.name}: no result after {self.schedule.max_wait_s:.0f} s")
            polls += 1
            await clock.sleep(self.schedule.interval(polls))

    async def _cancel(self, ref: ProviderRef) -> None:
        call = self.cancel_call(ref)
        if call is None:
            log.info("%s: request %s abandoned (the provider offers no cancel)", self.name, ref.request_id)
            return
        log.info("%s cancelling request %s", self.name, ref.request_id)
        await self.http.cancel(*call)
