"""fal.ai queue backends: PuLID on FLUX (``fal-ai/flux-pulid``) and PuLID on SDXL (``fal-ai/pulid``)."""

from __future__ import annotations

import asyncio
import logging
from enum import StrEnum
from typing import Any

import aiohttp
from pydantic import BaseModel

from engine.backend import GenerationResult, OutputImage, Progress, ProviderRef, Stage
from engine.capabilities import Capabilities, Choice, Range, Text
from engine.errors import AuthError, InvalidInputError, ProtocolError, ProviderFailedError
from engine.providers.http import (
    MalformedReplyError,
    PollSchedule,
    Provider,
    ProviderHttp,
    Reply,
    RetryPolicy,
    Timeouts,
    Timing,
    WaitExceededError,
    data_uri,
    job_failure,
    model_or_protocol,
    poll_until,
)
from engine.providers.settings import FalSettings, reveal
from engine.request import GenerationRequest

log = logging.getLogger(__name__)

USD_PER_MEGAPIXEL = 0.0333
SEED_RANGE = Range(0, 2**64 - 1, None, integer=True)

FLUX_PULID_CAPABILITIES = Capabilities(
    limits={
        "negative_prompt": Text(default=""),
        # fal documents the size as a free width/height object; these bounds keep FLUX in its trained range.
        "width": Range(256, 1536, 1024, integer=True),
        "height": Range(256, 1536, 768, integer=True),  # 1024x768 is the documented landscape_4_3 default
        "steps": Range(1, 50, 20, integer=True),
        "guidance": Range(0, 20, 4),
        "id_weight": Range(0, 1, 1),
        "start_step": Range(0, 50, 0, integer=True),
        "true_cfg": Range(1, 10, 1),
        "seed": SEED_RANGE,
        "max_sequence_length": Choice((128, 256, 512), 128),
        "safety_checker": Choice((True, False), True),
        "num_images": Range(1, 1, 1, integer=True),
    },
    max_faces=1,
)

PULID_CAPABILITIES = Capabilities(
    limits={
        "negative_prompt": Text(),  # unset: the model's own negative prompt applies
        # fal documents defaults only for this model; the bounds are the SDXL PuLID model's own.
        "width": Range(512, 2048, 768, integer=True),
        "height": Range(512, 2048, 1024, integer=True),
        "steps": Range(1, 100, 4, integer=True),
        "guidance": Range(1, 1.5, 1.2),
        "id_weight": Range(0, 5, 0.8),  # sent as id_scale
        "seed": SEED_RANGE,
        "mode": Choice(("fidelity", "extreme style"), "fidelity"),
        "num_images": Range(1, 4, 1, integer=True),
    },
    max_faces=4,  # fal recommends four reference photos
)


class QueueStatus(StrEnum):
    IN_QUEUE = "IN_QUEUE"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"


class _Submitted(BaseModel):
    request_id: str
    status_url: str
    response_url: str
    cancel_url: str


class _Status(BaseModel):
    status: str
    queue_position: int | None = None
    error: str | None = None
    error_type: str | None = None


class _Image(BaseModel):
    url: str
    width: int | None = None
    height: int | None = None
    content_type: str | None = None


class _Result(BaseModel):
    images: list[_Image]
    seed: int | str | None = None
    has_nsfw_concepts: list[bool] | None = None  # not documented for every fal model


class FalQueueBackend:
    """Common queue protocol: submit, follow the returned status URL, fetch the result, cancel."""

    name: str
    capabilities: Capabilities
    app: str

    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: FalSettings,
        *,
        timing: Timing | None = None,
        retry: RetryPolicy | None = None,
        timeouts: Timeouts | None = None,
        schedule: PollSchedule | None = None,
    ) -> None:
        self.settings = settings
        key = reveal(settings.key)
        self._http = ProviderHttp(
            session,
            Provider.FAL,
            auth={"Authorization": f"Key {key}"},
            secrets=[key],
            timing=timing,
            retry=retry,
            timeouts=timeouts,
        )
        self.schedule = schedule or PollSchedule(first_s=1.0, factor=1.2, max_s=5.0)

    def unavailable_reason(self) -> str | None:
        if self.settings.key is None:
            return "no fal.ai key configured (LIKENESS_FAL__KEY)"
        return None

    def arguments(self, request: GenerationRequest) -> dict[str, Any]:
        raise NotImplementedError

    def _value(self, request: GenerationRequest, name: str) -> Any:
        value = getattr(request, name)
        return self.capabilities.default(name) if value is None else value

    def _image_size(self, request: GenerationRequest) -> dict[str, int]:
        return {"width": int(self._value(request, "width")), "height": int(self._value(request, "height"))}

    async def generate(self, request: GenerationRequest, progress: Progress) -> GenerationResult:
        reason = self.unavailable_reason()
        if reason is not None:
            raise AuthError(reason)
        ref = progress.resume
        if ref is None:
            ref = await self._submit(request)
            try:
                await progress.submitted(ref)
            except asyncio.CancelledError:
                if not progress.abandoned:
                    await self._cancel(ref)
                raise
        elif ref.backend != self.name:
            raise ProviderFailedError(f"{self.name} cannot resume a {ref.backend} request")
        try:
            return await self._wait(ref, request, progress)
        except asyncio.CancelledError:
            if not progress.abandoned:
                await self._cancel(ref)
            raise
        except WaitExceededError:
            await self._cancel(ref)
            raise

    async def _submit(self, request: GenerationRequest) -> ProviderRef:
        if not request.faces:
            raise InvalidInputError("no face photo given")
        url = f"{self.settings.base_url}/{self.app}"
        reply = await self._http.submit(url, json_body=self.arguments(request))
        try:
            submitted = model_or_protocol(_Submitted.model_validate, reply.json(), "fal submit")
        except MalformedReplyError as exc:
            # The job was accepted but we cannot follow it: never submit again.
            raise ProtocolError(f"{exc.detail}; the job was accepted and may be billed") from None
        log.info("%s submitted request %s", self.name, submitted.request_id)
        return ProviderRef(
            backend=self.name,
            request_id=submitted.request_id,
            urls={
                "status": submitted.status_url,
                "response": submitted.response_url,
                "cancel": submitted.cancel_url,
            },
        )

    async def _cancel(self, ref: ProviderRef) -> None:
        url = ref.urls.get("cancel")
        if url:
            log.info("%s cancelling request %s", self.name, ref.request_id)
            await self._http.cancel("PUT", url)

    def _url(self, ref: ProviderRef, kind: str) -> str:
        url = ref.urls.get(kind)
        if not url:
            raise ProtocolError(f"{self.name} request {ref.request_id} has no {kind} URL")
        return url

    async def _wait(self, ref: ProviderRef, request: GenerationRequest, progress: Progress) -> GenerationResult:
        status_url = self._url(ref, "status")
        last: tuple[str, int | None] | None = None

        async def step() -> _Status | None:
            nonlocal last
            payload = await self._http.get_json(status_url, what="status", check=_check_status)
            status = _Status.model_validate(payload)
            now = (status.status, status.queue_position)
            if status.status == QueueStatus.COMPLETED:
                return status
            if now != last:
                last = now
                if status.status == QueueStatus.IN_QUEUE:
                    await progress.update(Stage.QUEUED, queue_position=status.queue_position)
                elif status.status == QueueStatus.IN_PROGRESS:
                    await progress.update(Stage.RUNNING)
                else:
                    log.warning("%s request %s: unknown status %r", self.name, ref.request_id, status.status)
            return None

        final = await poll_until(step, schedule=self.schedule, timing=self._http.timing, what=self.name)
        if final.error_type == "client_cancelled":
            raise ProviderFailedError(f"{self.name} request {ref.request_id} was cancelled at the provider")
        reply, result = await self._http.call("GET", self._url(ref, "response"), what="result", parse=_parse_result)
        if final.error:
            # The result answered 2xx although the status carried an error: trust the status.
            message = self._http.clean(final.error)
            raise job_failure(message, f"fal {self.app}: {message}")
        return await self._collect(reply, result, request)

    async def _collect(self, reply: Reply, result: _Result, request: GenerationRequest) -> GenerationResult:
        if not result.images:
            raise ProviderFailedError(f"fal {self.app}: the result holds no images")
        flags = result.has_nsfw_concepts or []
        images: list[OutputImage] = list(
            await asyncio.gather(
                *(
                    self._http.fetch_output(image.url, nsfw=bool(flags[i]) if i < len(flags) else False)
                    for i, image in enumerate(result.images)
                )
            )
        )
        if any(image.nsfw for image in images):
            log.info("%s: %d of %d images flagged NSFW", self.name, sum(i.nsfw for i in images), len(images))
        return GenerationResult(
            images=tuple(images),
            seed=str(result.seed) if result.seed is not None else _seed(request),
            spend_usd=_spend(reply, images),
        )


def _check_status(payload: Any) -> None:
    if not isinstance(payload, dict) or not isinstance(payload.get("status"), str):
        raise MalformedReplyError("fal status: unexpected answer shape")
    model_or_protocol(_Status.model_validate, payload, "fal status")


def _parse_result(reply: Reply) -> tuple[Reply, _Result]:
    return reply, model_or_protocol(_Result.model_validate, reply.json(), "fal result")


def _seed(request: GenerationRequest) -> str | None:
    return None if request.seed is None else str(request.seed)


def _spend(reply: Reply, images: list[OutputImage]) -> float:
    units = reply.headers.get("x-fal-billable-units")
    if units:
        try:
            return round(float(units) * USD_PER_MEGAPIXEL, 6)
        except ValueError:
            log.warning("fal: unreadable x-fal-billable-units %r", units[:40])
    megapixels = sum(image.width * image.height for image in images) / 1_000_000
    return round(megapixels * USD_PER_MEGAPIXEL, 6)


class FalFluxPulidBackend(FalQueueBackend):
    """``fal-ai/flux-pulid``: one face photo, one image per request."""

    name = "fal-flux-pulid"
    capabilities = FLUX_PULID_CAPABILITIES
    app = "fal-ai/flux-pulid"

    def arguments(self, request: GenerationRequest) -> dict[str, Any]:
        args: dict[str, Any] = {
            "prompt": request.prompt,
            "reference_image_url": data_uri(request.faces[0]),
            "image_size": self._image_size(request),
            "num_inference_steps": int(self._value(request, "steps")),
            "guidance_scale": float(self._value(request, "guidance")),
            "negative_prompt": self._value(request, "negative_prompt"),
            "start_step": int(self._value(request, "start_step")),
            "true_cfg": float(self._value(request, "true_cfg")),
            "id_weight": float(self._value(request, "id_weight")),
            "enable_safety_checker": bool(self._value(request, "safety_checker")),
            "max_sequence_length": str(self._value(request, "max_sequence_length")),
        }
        if request.seed is not None:
            args["seed"] = request.seed
        return args


class FalPulidBackend(FalQueueBackend):
    """``fal-ai/pulid`` (SDXL): up to four photos of the same person, several images per request."""

    name = "fal-pulid"
    capabilities = PULID_CAPABILITIES
    app = "fal-ai/pulid"

    def arguments(self, request: GenerationRequest) -> dict[str, Any]:
        faces = request.faces[: self.capabilities.max_faces]
        args: dict[str, Any] = {
            "reference_images": [{"image_url": data_uri(face)} for face in faces],
            "prompt": request.prompt,
            "num_images": request.num_images,
            "guidance_scale": float(self._value(request, "guidance")),
            "num_inference_steps": int(self._value(request, "steps")),
            "image_size": self._image_size(request),
            "id_scale": float(self._value(request, "id_weight")),
            "mode": self._value(request, "mode"),
            # id_mix blends two different people; our photos all show the same one.
            "id_mix": False,
        }
        if request.negative_prompt is not None:
            args["negative_prompt"] = request.negative_prompt
        if request.seed is not None:
            args["seed"] = request.seed
        return args
