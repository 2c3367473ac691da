"""fal.ai queue backends: PuLID on FLUX (``fal-ai/flux-pulid``) and PuLID on SDXL (``fal-ai/pulid``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel

from engine.backend import GenerationResult, OutputImage, ProviderRef, Stage
from engine.capabilities import Capabilities, Choice, Range, Text
from engine.errors import BackendError, OutOfCreditError, ProtocolError, ProviderFailedError
from engine.providers.client import Reply
from engine.providers.failures import HttpFailure, MalformedReplyError, job_failure, model_or_protocol
from engine.providers.images import data_uri
from engine.providers.remote import Pending, PollSchedule, RemoteBackend, Vendor, seed_text
from engine.providers.settings import FalSettings
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


def _fal_rules(failure: HttpFailure) -> BackendError | None:
    """fal's own signals: a locked account, and 5xx answers fal itself marks as not worth retrying."""
    if failure.status == 403 and "locked" in failure.message.lower():
        return OutOfCreditError(failure.text)
    if failure.status >= 500 and failure.headers.get("X-Fal-Retryable", "").lower() == "false":
        return ProviderFailedError(failure.text)
    if failure.status == 504 and failure.headers.get("X-Fal-Request-Timeout-Type"):
        return ProviderFailedError(failure.text)  # a deadline we set fired: retrying cannot help
    return None


FAL = Vendor(label="fal", title="fal.ai", key_setting="LIKENESS_FAL__KEY", auth_scheme="Key", rules=_fal_rules)


class QueueStatus(StrEnum):
    IN_QUEUE = "IN_QUEUE"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"


_STAGES: dict[str, Stage] = {QueueStatus.IN_QUEUE: Stage.QUEUED, QueueStatus.IN_PROGRESS: Stage.RUNNING}


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


@dataclass(frozen=True)
class Finished:
    """A completed request's result and the answer that carried it (its headers hold the billed units)."""

    reply: Reply
    result: _Result


class FalQueueBackend(RemoteBackend[FalSettings, Finished]):
    """fal's queue protocol: submit, follow the returned status URL, fetch the result, cancel."""

    vendor = FAL
    poll_schedule = PollSchedule(first_s=1.0, factor=1.2, max_s=5.0)
    app: str

    def _image_size(self, request: GenerationRequest) -> dict[str, int]:
        return {"width": int(self.value(request, "width")), "height": int(self.value(request, "height"))}

    async def submit(self, arguments: dict[str, Any]) -> ProviderRef:
        reply = await self.http.submit(f"{self.settings.base_url}/{self.app}", json_body=arguments)
        submitted = model_or_protocol(_Submitted.model_validate, reply.json(), "fal submit")
        urls = {"status": submitted.status_url, "response": submitted.response_url, "cancel": submitted.cancel_url}
        return ProviderRef(backend=self.name, request_id=submitted.request_id, urls=urls)

    def cancel_call(self, ref: ProviderRef) -> tuple[str, str] | None:
        url = ref.urls.get("cancel")
        return ("PUT", url) if url else None

    def _url(self, ref: ProviderRef, kind: str) -> str:
        url = ref.urls.get(kind)
        if not url:
            raise ProtocolError(f"{self.name} request {ref.request_id} has no {kind} URL")
        return url

    async def poll(self, ref: ProviderRef) -> Pending | Finished:
        status = _Status.model_validate(
            await self.http.get_json(self._url(ref, "status"), what="status", check=_check_status)
        )
        if status.status != QueueStatus.COMPLETED:
            return Pending(status.status, _STAGES.get(status.status), status.queue_position)
        if status.error_type == "client_cancelled":
            raise ProviderFailedError(f"{self.name} request {ref.request_id} was cancelled at the provider")
        reply, result = await self.http.call("GET", self._url(ref, "response"), what="result", parse=_parse_result)
        if status.error:
            # The result answered 2xx although the status carried an error: trust the status.
            message = self.http.clean(status.error)
            raise job_failure(message, f"fal {self.app}: {message}")
        return Finished(reply, result)

    async def collect(self, done: Finished, request: GenerationRequest) -> GenerationResult:
        result = done.result
        if not result.images:
            raise ProviderFailedError(f"fal {self.app}: the result holds no images")
        images = await self.http.fetch_outputs([image.url for image in result.images], result.has_nsfw_concepts or [])
        if any(image.nsfw for image in images):
            log.info("%s: %d of %d images flagged NSFW", self.name, sum(i.nsfw for i in images), len(images))
        return GenerationResult(
            images=images,
            seed=str(result.seed) if result.seed is not None else seed_text(request),
            spend_usd=_spend(done.reply, images),
        )


def _check_status(payload: Any) -> None:
    if not isinstance(payload, dict) or not isinstance(payload.get("status"), str):
        raise MalformedReplyError("fal status: unexpected answer shape")
    model_or_protocol(_Status.model_validate, payload, "fal status")


def _parse_result(reply: Reply) -> tuple[Reply, _Result]:
    return reply, model_or_protocol(_Result.model_validate, reply.json(), "fal result")


def _spend(reply: Reply, images: tuple[OutputImage, ...]) -> float:
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

    async def arguments(self, request: GenerationRequest) -> dict[str, Any]:
        args: dict[str, Any] = {
            "prompt": request.prompt,
            "reference_image_url": data_uri(request.faces[0]),
            "image_size": self._image_size(request),
            "num_inference_steps": int(self.value(request, "steps")),
            "guidance_scale": float(self.value(request, "guidance")),
            "negative_prompt": self.value(request, "negative_prompt"),
            "start_step": int(self.value(request, "start_step")),
            "true_cfg": float(self.value(request, "true_cfg")),
            "id_weight": float(self.value(request, "id_weight")),
            "enable_safety_checker": bool(self.value(request, "safety_checker")),
            "max_sequence_length": str(self.value(request, "max_sequence_length")),
        }
        if request.seed is not None:
            args["seed"] = request.seed
        return args


class FalPulidBackend(FalQueueBackend):
    """``fal-ai/pulid`` (SDXL): up to four photos of the same person, several images per request."""

    name = "fal-pulid"
    capabilities = PULID_CAPABILITIES
    app = "fal-ai/pulid"

    async def arguments(self, request: GenerationRequest) -> dict[str, Any]:
        faces = request.faces[: self.capabilities.max_faces]
        args: dict[str, Any] = {
            "reference_images": [{"image_url": data_uri(face)} for face in faces],
            "prompt": request.prompt,
            "num_images": request.num_images,
            "guidance_scale": float(self.value(request, "guidance")),
            "num_inference_steps": int(self.value(request, "steps")),
            "image_size": self._image_size(request),
            "id_scale": float(self.value(request, "id_weight")),
            "mode": self.value(request, "mode"),
            # id_mix blends two different people; our photos all show the same one.
            "id_mix": False,
        }
        if request.negative_prompt is not None:
            args["negative_prompt"] = request.negative_prompt
        if request.seed is not None:
            args["seed"] = request.seed
        return args
