"""Segmind backend for ``flux-pulid``: one synchronous call answered with the image itself or with JSON."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import aiohttp

from engine.backend import GenerationResult, OutputImage, Progress, Stage
from engine.capabilities import Capabilities, Choice, Range, Text
from engine.errors import AuthError, InvalidInputError, ProtocolError, UnknownOutcomeError
from engine.providers.http import (
    Provider,
    ProviderHttp,
    Reply,
    RetryPolicy,
    Timeouts,
    Timing,
    data_uri,
    job_failure,
    output_image,
    provider_message,
)
from engine.providers.settings import SegmindSettings, reveal
from engine.request import GenerationRequest

log = logging.getLogger(__name__)

CAPABILITIES = Capabilities(
    limits={
        "negative_prompt": Text(),  # unset: the model's own negative prompt applies
        "width": Range(256, 1536, 896, integer=True),
        "height": Range(256, 1536, 1152, integer=True),
        "steps": Range(1, 20, 20, integer=True),
        "guidance": Range(1, 10, 4),
        "id_weight": Range(0, 3, 1.05),
        "start_step": Range(0, 10, 0, integer=True),
        "true_cfg": Range(1, 10, 1),
        "seed": Range(0, 2**63 - 1, None, integer=True),
        "max_sequence_length": Range(128, 512, 128, integer=True),
        "output_format": Choice(("jpeg", "png", "webp"), "webp"),
        "output_quality": Range(1, 100, 80, integer=True),
        # The call answers with one image, whatever num_outputs says.
        "num_images": Range(1, 1, 1, integer=True),
    },
    max_faces=1,
)

_WIRE_FORMAT = {"jpeg": "jpg", "png": "png", "webp": "webp"}
_IMAGE_KEYS = ("image", "images", "output", "outputs")


class SegmindFluxPulidBackend:
    """Segmind's documented call for this model is synchronous: there is no request id to store or resume."""

    name = "segmind-flux-pulid"
    capabilities = CAPABILITIES

    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: SegmindSettings,
        *,
        timing: Timing | None = None,
        retry: RetryPolicy | None = None,
        timeouts: Timeouts | None = None,
    ) -> None:
        self.settings = settings
        key = reveal(settings.key)
        self._http = ProviderHttp(
            session,
            Provider.SEGMIND,
            auth={"x-api-key": key},
            secrets=[key],
            timing=timing,
            retry=retry,
            timeouts=timeouts,
        )

    def unavailable_reason(self) -> str | None:
        if self.settings.key is None:
            return "no Segmind key configured (LIKENESS_SEGMIND__KEY)"
        return None

    def _value(self, request: GenerationRequest, name: str) -> Any:
        value = getattr(request, name)
        return self.capabilities.default(name) if value is None else value

    def arguments(self, request: GenerationRequest) -> dict[str, Any]:
        if not request.faces:
            raise InvalidInputError("no face photo given")
        args: dict[str, Any] = {
            "main_face_image": data_uri(request.faces[0]),
            "prompt": request.prompt,
            "width": int(self._value(request, "width")),
            "height": int(self._value(request, "height")),
            "num_steps": int(self._value(request, "steps")),
            "start_step": int(self._value(request, "start_step")),
            "guidance_scale": float(self._value(request, "guidance")),
            "id_weight": float(self._value(request, "id_weight")),
            "true_cfg": float(self._value(request, "true_cfg")),
            "max_sequence_length": int(self._value(request, "max_sequence_length")),
            "num_outputs": 1,
            "output_format": _WIRE_FORMAT[self._value(request, "output_format")],
            "output_quality": int(self._value(request, "output_quality")),
        }
        if request.negative_prompt is not None:
            args["negative_prompt"] = request.negative_prompt
        if request.seed is not None:
            args["seed"] = request.seed
        return args

    async def generate(self, request: GenerationRequest, progress: Progress) -> GenerationResult:
        reason = self.unavailable_reason()
        if reason is not None:
            raise AuthError(reason)
        if progress.resume is not None:
            raise UnknownOutcomeError(
                f"{self.name}: a synchronous call cannot be resumed; the earlier attempt may have been billed"
            )
        args = self.arguments(request)
        await progress.update(Stage.RUNNING)
        reply = await self._http.submit(f"{self.settings.base_url}/v1/flux-pulid", json_body=args)
        remaining = reply.headers.get("x-remaining-credits")
        if remaining is not None:
            log.info("%s: %s credits left on the account", self.name, remaining[:20])
        images = await self._images(reply)
        return GenerationResult(
            images=tuple(images),
            seed=None if request.seed is None else str(request.seed),
            spend_usd=round(self.settings.usd_per_image * len(images), 6),
        )

    async def _images(self, reply: Reply) -> list[OutputImage]:
        content_type = reply.content_type
        if content_type.startswith("image/"):
            return [output_image(reply.body)]
        if content_type == "application/json" or content_type.endswith("+json"):
            try:
                payload = json.loads(reply.body)
            except (ValueError, UnicodeDecodeError):
                raise ProtocolError("segmind answer is not valid JSON; the call may have been billed") from None
            refs = _image_refs(payload)
            if not refs:
                message = self._http.clean(provider_message(payload))
                if message:
                    raise job_failure(message, f"segmind: {message}")
                raise ProtocolError("segmind JSON answer holds no image")
            return list(await asyncio.gather(*(self._http.fetch_output(ref) for ref in refs)))
        raise ProtocolError(f"segmind answered HTTP {reply.status} with {content_type or 'no content type'}")


def _image_refs(payload: Any) -> list[str]:
    """Image references (URL, data URI or base64) in a JSON answer, whichever key carries them."""
    if not isinstance(payload, dict):
        return []
    for key in _IMAGE_KEYS:
        value = payload.get(key)
        if isinstance(value, str) and value:
            return [value]
        if isinstance(value, list) and value and all(isinstance(item, str) for item in value):
            return list(value)
    return []
