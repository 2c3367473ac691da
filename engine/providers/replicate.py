"""Replicate backend for the community model ``bytedance/flux-pulid``, pinned to a configured version."""

from __future__ import annotations

import asyncio
import logging
from enum import StrEnum
from typing import Any

import aiohttp
from pydantic import BaseModel

from engine.backend import GenerationResult, OutputImage, Progress, ProviderRef, Stage
from engine.capabilities import Capabilities, Choice, Range, Text
from engine.errors import (
    AuthError,
    ContentPolicyError,
    InvalidInputError,
    ProtocolError,
    ProviderFailedError,
)
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
    sniff_image,
)
from engine.providers.settings import ReplicateSettings, reveal
from engine.request import GenerationRequest

log = logging.getLogger(__name__)

# Replicate recommends data URLs only for small files; larger photos go through its file upload.
DATA_URI_MAX_BYTES = 256 * 1024

CAPABILITIES = Capabilities(
    limits={
        "negative_prompt": Text(),  # unset: the model's own negative prompt applies
        "width": Range(256, 1536, 896, integer=True),
        "height": Range(256, 1536, 1152, integer=True),
        "steps": Range(1, 20, 20, integer=True),
        "guidance": Range(1, 10, 4),
        "id_weight": Range(0, 3, 1),
        "start_step": Range(0, 10, 0, integer=True),
        "true_cfg": Range(1, 10, 1),
        "seed": Range(0, 2**63 - 1, None, integer=True),
        "max_sequence_length": Range(128, 512, 128, integer=True),
        "output_format": Choice(("jpeg", "png", "webp"), "webp"),
        "output_quality": Range(1, 100, 80, integer=True),
        "num_images": Range(1, 4, 1, integer=True),
    },
    max_faces=1,
)

_WIRE_FORMAT = {"jpeg": "jpg", "png": "png", "webp": "webp"}


class PredictionStatus(StrEnum):
    STARTING = "starting"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    ABORTED = "aborted"  # a Cancel-After deadline passed before the prediction started; not billed


TERMINAL = frozenset(
    {PredictionStatus.SUCCEEDED, PredictionStatus.FAILED, PredictionStatus.CANCELED, PredictionStatus.ABORTED}
)


class _Urls(BaseModel):
    get: str | None = None
    cancel: str | None = None


class _Metrics(BaseModel):
    predict_time: float | None = None


class _Prediction(BaseModel):
    id: str
    status: str
    output: list[str] | str | None = None
    error: str | None = None
    urls: _Urls = _Urls()
    metrics: _Metrics | None = None


class _FileUrls(BaseModel):
    get: str


class _File(BaseModel):
    id: str
    urls: _FileUrls


class ReplicateFluxPulidBackend:
    """Create a prediction, poll ``urls.get`` until a terminal status, download the outputs at once."""

    name = "replicate-flux-pulid"
    capabilities = CAPABILITIES

    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: ReplicateSettings,
        *,
        timing: Timing | None = None,
        retry: RetryPolicy | None = None,
        timeouts: Timeouts | None = None,
        schedule: PollSchedule | None = None,
    ) -> None:
        self.settings = settings
        token = reveal(settings.token)
        self._http = ProviderHttp(
            session,
            Provider.REPLICATE,
            auth={"Authorization": f"Bearer {token}"},
            secrets=[token],
            timing=timing,
            retry=retry,
            timeouts=timeouts,
        )
        self.schedule = schedule or PollSchedule(first_s=1.0, factor=1.3, max_s=5.0)

    def unavailable_reason(self) -> str | None:
        if self.settings.token is None:
            return "no Replicate token configured (LIKENESS_REPLICATE__TOKEN)"
        if self.settings.version_id is None:
            return (
                "no Replicate model version configured (LIKENESS_REPLICATE__VERSION): "
                "bytedance/flux-pulid is a community model and must be pinned to a version"
            )
        return None

    def _value(self, request: GenerationRequest, name: str) -> Any:
        value = getattr(request, name)
        return self.capabilities.default(name) if value is None else value

    async def arguments(self, request: GenerationRequest) -> dict[str, Any]:
        if not request.faces:
            raise InvalidInputError("no face photo given")
        args: dict[str, Any] = {
            "main_face_image": await self._face(request.faces[0]),
            "prompt": request.prompt,
            "width": int(self._value(request, "width")),
            "height": int(self._value(request, "height")),
            "num_steps": int(self._value(request, "steps")),
            "start_step": int(self._value(request, "start_step")),
            "guidance_scale": float(self._value(request, "guidance")),
            "id_weight": float(self._value(request, "id_weight")),
            "true_cfg": float(self._value(request, "true_cfg")),
            "max_sequence_length": int(self._value(request, "max_sequence_length")),
            "num_outputs": request.num_images,
            "output_format": _WIRE_FORMAT[self._value(request, "output_format")],
            "output_quality": int(self._value(request, "output_quality")),
        }
        if request.negative_prompt is not None:
            args["negative_prompt"] = request.negative_prompt
        if request.seed is not None:
            args["seed"] = request.seed
        return args

    async def _face(self, face: bytes) -> str:
        if len(face) <= DATA_URI_MAX_BYTES:
            return data_uri(face)
        content_type = sniff_image(face)
        if content_type is None:
            raise InvalidInputError("face photo is not a JPEG, PNG or WEBP image")

        def form() -> aiohttp.FormData:
            data = aiohttp.FormData()
            extension = content_type.rsplit("/", 1)[-1]
            data.add_field("content", face, filename=f"face.{extension}", content_type=content_type)
            return data

        def parse(reply: Reply) -> str:
            return model_or_protocol(_File.model_validate, reply.json(), "replicate file").urls.get

        # An upload is not billed, so a lost answer can safely be uploaded again.
        return await self._http.call(
            "POST", f"{self.settings.base_url}/v1/files", what="file upload", parse=parse, form=form
        )

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
        body = {"version": self.settings.version_id, "input": await self.arguments(request)}
        reply = await self._http.submit(f"{self.settings.base_url}/v1/predictions", json_body=body)
        try:
            prediction = model_or_protocol(_Prediction.model_validate, reply.json(), "replicate create")
        except MalformedReplyError as exc:
            raise ProtocolError(f"{exc.detail}; the prediction was created and may be billed") from None
        log.info("%s created prediction %s", self.name, prediction.id)
        base = f"{self.settings.base_url}/v1/predictions/{prediction.id}"
        return ProviderRef(
            backend=self.name,
            request_id=prediction.id,
            urls={"get": prediction.urls.get or base, "cancel": prediction.urls.cancel or f"{base}/cancel"},
        )

    async def _cancel(self, ref: ProviderRef) -> None:
        url = ref.urls.get("cancel") or f"{self.settings.base_url}/v1/predictions/{ref.request_id}/cancel"
        log.info("%s cancelling prediction %s", self.name, ref.request_id)
        await self._http.cancel("POST", url)

    async def _wait(self, ref: ProviderRef, request: GenerationRequest, progress: Progress) -> GenerationResult:
        url = ref.urls.get("get") or f"{self.settings.base_url}/v1/predictions/{ref.request_id}"
        last: str | None = None

        async def step() -> _Prediction | None:
            nonlocal last
            prediction = await self._http.get_json(url, what="prediction", check=_check_prediction)
            current = _Prediction.model_validate(prediction)
            if current.status in TERMINAL:
                return current
            if current.status != last:
                last = current.status
                if current.status == PredictionStatus.STARTING:
                    await progress.update(Stage.QUEUED)
                elif current.status == PredictionStatus.PROCESSING:
                    await progress.update(Stage.RUNNING)
                else:
                    log.warning("%s %s: unknown status %r", self.name, ref.request_id, current.status)
            return None

        final = await poll_until(step, schedule=self.schedule, timing=self._http.timing, what=self.name)
        where = f"replicate prediction {final.id}"
        if final.status == PredictionStatus.FAILED:
            message = self._http.clean(final.error or "")
            raise job_failure(message, f"{where} failed: {message or 'no message'}")
        if final.status == PredictionStatus.CANCELED:
            raise ProviderFailedError(f"{where} was canceled at the provider")
        if final.status == PredictionStatus.ABORTED:
            raise ProviderFailedError(f"{where} was aborted before it started (not billed)")
        outputs = [final.output] if isinstance(final.output, str) else list(final.output or [])
        if not outputs:
            # Replicate's safety filter can drop every image and still report success.
            raise ContentPolicyError(f"{where} succeeded without outputs (filtered by the safety checker)")
        images: list[OutputImage] = list(await asyncio.gather(*(self._http.fetch_output(o) for o in outputs)))
        predict_time = final.metrics.predict_time if final.metrics else None
        if predict_time is None:
            log.warning("%s %s: no predict_time; spend recorded as 0", self.name, final.id)
        return GenerationResult(
            images=tuple(images),
            seed=None if request.seed is None else str(request.seed),
            spend_usd=round((predict_time or 0.0) * self.settings.usd_per_second, 6),
        )


def _check_prediction(payload: Any) -> None:
    model_or_protocol(_Prediction.model_validate, payload, "replicate prediction")
