"""WaveSpeed backend for ``wavespeed-ai/flux-pulid``: upload the photo, submit, poll the result every ≥2 s."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

import aiohttp
from pydantic import BaseModel

from engine.backend import GenerationResult, OutputImage, Progress, ProviderRef, Stage
from engine.capabilities import Capabilities, Choice, Range
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
    classify_status,
    job_failure,
    model_or_protocol,
    poll_until,
    sniff_image,
)
from engine.providers.settings import WaveSpeedSettings, reveal
from engine.request import GenerationRequest

log = logging.getLogger(__name__)

USD_PER_IMAGE = 0.02
# WaveSpeed asks image clients to leave at least two seconds between result polls.
MIN_POLL_S = 2.0

CAPABILITIES = Capabilities(
    limits={
        "width": Range(256, 1536, 1024, integer=True),
        "height": Range(256, 1536, 1024, integer=True),
        "guidance": Range(0, 20, 3.5),
        "seed": Range(0, 2147483647, None, integer=True),
        "output_format": Choice(("jpeg", "png", "webp"), "jpeg"),
        "num_images": Range(1, 1, 1, integer=True),
    },
    max_faces=1,
)


class TaskStatus(StrEnum):
    CREATED = "created"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    # Not in the model's page but reported by the platform for tasks that ended another way.
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    DELETED = "deleted"


ENDED = frozenset({TaskStatus.CANCELLED, TaskStatus.TIMEOUT, TaskStatus.DELETED})


class _Task(BaseModel):
    id: str
    status: str
    outputs: list[str] | None = None
    has_nsfw_contents: list[bool] | None = None
    error: str | None = None


class _Upload(BaseModel):
    download_url: str


def _envelope_data(payload: Any, headers: Mapping[str, str], *, submit: bool, where: str) -> Any:
    """``data`` of WaveSpeed's ``{code, message, data}`` envelope; a code other than 200 is a failure."""
    if not isinstance(payload, dict) or not isinstance(payload.get("code"), int):
        raise MalformedReplyError(f"wavespeed {where}: answer is not an envelope")
    code = payload["code"]
    if code != 200:
        message = str(payload.get("message") or "")
        raise classify_status(Provider.WAVESPEED, code, message, headers, submit=submit, where=where)
    return payload.get("data")


class WaveSpeedFluxPulidBackend:
    """WaveSpeed's async task API; it offers no cancel, so a cancelled job is only abandoned."""

    name = "wavespeed-flux-pulid"
    capabilities = CAPABILITIES

    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: WaveSpeedSettings,
        *,
        timing: Timing | None = None,
        retry: RetryPolicy | None = None,
        timeouts: Timeouts | None = None,
        schedule: PollSchedule | None = None,
    ) -> None:
        self.settings = settings
        key = reveal(settings.key)
        retry = retry or RetryPolicy(base_delay_s=MIN_POLL_S)
        # Retries of a poll are polls too: the minimum gap applies to them as well.
        retry = dataclasses.replace(retry, min_delay_s=max(retry.min_delay_s, MIN_POLL_S))
        self._http = ProviderHttp(
            session,
            Provider.WAVESPEED,
            auth={"Authorization": f"Bearer {key}"},
            secrets=[key],
            timing=timing,
            retry=retry,
            timeouts=timeouts,
        )
        schedule = schedule or PollSchedule(first_s=MIN_POLL_S, factor=1.25, max_s=8.0)
        self.schedule = dataclasses.replace(schedule, min_s=max(schedule.min_s, MIN_POLL_S))

    def unavailable_reason(self) -> str | None:
        if self.settings.key is None:
            return "no WaveSpeed key configured (LIKENESS_WAVESPEED__KEY)"
        return None

    def _value(self, request: GenerationRequest, name: str) -> Any:
        value = getattr(request, name)
        return self.capabilities.default(name) if value is None else value

    async def _upload(self, face: bytes) -> str:
        content_type = sniff_image(face)
        if content_type is None:
            raise InvalidInputError("face photo is not a JPEG, PNG or WEBP image")
        extension = content_type.rsplit("/", 1)[-1]

        def form() -> aiohttp.FormData:
            data = aiohttp.FormData()
            data.add_field("file", face, filename=f"face.{extension}", content_type=content_type)
            return data

        def parse(reply: Reply) -> str:
            data = _envelope_data(reply.json(), reply.headers, submit=False, where="upload")
            return model_or_protocol(_Upload.model_validate, data, "wavespeed upload").download_url

        # The model takes the photo by URL; an upload is not billed, so retrying it is safe.
        url = f"{self.settings.base_url}/api/v3/media/upload/binary"
        return await self._http.call("POST", url, what="upload", parse=parse, form=form)

    async def arguments(self, request: GenerationRequest) -> dict[str, Any]:
        if not request.faces:
            raise InvalidInputError("no face photo given")
        width, height = int(self._value(request, "width")), int(self._value(request, "height"))
        return {
            "prompt": request.prompt,
            "image": await self._upload(request.faces[0]),
            "size": f"{width}*{height}",
            "guidance_scale": float(self._value(request, "guidance")),
            "seed": -1 if request.seed is None else request.seed,
            "output_format": self._value(request, "output_format"),
            "enable_base64_output": False,
            "enable_sync_mode": False,
        }

    async def generate(self, request: GenerationRequest, progress: Progress) -> GenerationResult:
        reason = self.unavailable_reason()
        if reason is not None:
            raise AuthError(reason)
        ref = progress.resume
        if ref is None:
            ref = await self._submit(request)
            await progress.submitted(ref)
        elif ref.backend != self.name:
            raise ProviderFailedError(f"{self.name} cannot resume a {ref.backend} request")
        try:
            return await self._wait(ref, request, progress)
        except asyncio.CancelledError:
            log.info("%s: task %s abandoned (WaveSpeed has no cancel)", self.name, ref.request_id)
            raise

    async def _submit(self, request: GenerationRequest) -> ProviderRef:
        url = f"{self.settings.base_url}/api/v3/wavespeed-ai/flux-pulid"
        args = await self.arguments(request)

        reply = await self._http.submit(url, json_body=args)
        try:
            data = _envelope_data(reply.json(), reply.headers, submit=True, where="submit")
            task = model_or_protocol(_Task.model_validate, data, "wavespeed submit")
        except MalformedReplyError as exc:
            raise ProtocolError(f"{exc.detail}; the task may have been created and billed") from None
        log.info("%s submitted task %s", self.name, task.id)
        # Poll through the configured base URL so operators' gateways stay in the path.
        result_url = f"{self.settings.base_url}/api/v3/predictions/{task.id}/result"
        return ProviderRef(backend=self.name, request_id=task.id, urls={"get": result_url})

    async def _wait(self, ref: ProviderRef, request: GenerationRequest, progress: Progress) -> GenerationResult:
        url = ref.urls.get("get") or f"{self.settings.base_url}/api/v3/predictions/{ref.request_id}/result"
        last: str | None = None

        def parse(reply: Reply) -> _Task:
            data = _envelope_data(reply.json(), reply.headers, submit=False, where="result")
            return model_or_protocol(_Task.model_validate, data, "wavespeed result")

        async def step() -> _Task | None:
            nonlocal last
            task = await self._http.call("GET", url, what="result", parse=parse)
            if task.status in (TaskStatus.COMPLETED, TaskStatus.FAILED) or task.status in ENDED:
                return task
            if task.status != last:
                last = task.status
                if task.status == TaskStatus.CREATED:
                    await progress.update(Stage.QUEUED)
                elif task.status == TaskStatus.PROCESSING:
                    await progress.update(Stage.RUNNING)
                else:
                    log.warning("%s %s: unknown status %r", self.name, ref.request_id, task.status)
            return None

        final = await poll_until(
            step, schedule=self.schedule, timing=self._http.timing, what=self.name, wait_first=True
        )
        where = f"wavespeed task {final.id}"
        if final.status == TaskStatus.FAILED:
            message = self._http.clean(final.error or "")
            raise job_failure(message, f"{where} failed: {message or 'no message'}")
        if final.status != TaskStatus.COMPLETED:
            raise ProviderFailedError(f"{where} ended as {final.status}")
        outputs = final.outputs or []
        if not outputs:
            raise ProviderFailedError(f"{where} completed without outputs")
        flags = final.has_nsfw_contents or []
        images: list[OutputImage] = list(
            await asyncio.gather(
                *(
                    self._http.fetch_output(output, nsfw=bool(flags[i]) if i < len(flags) else False)
                    for i, output in enumerate(outputs)
                )
            )
        )
        return GenerationResult(
            images=tuple(images),
            seed=None if request.seed is None else str(request.seed),
            spend_usd=round(USD_PER_IMAGE * len(images), 6),
        )
