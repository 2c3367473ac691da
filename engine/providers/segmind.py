"""Segmind backend for ``flux-pulid``: one synchronous call answered with the image itself or with JSON."""

from __future__ import annotations

import json
import logging
from typing import Any

from engine.backend import GenerationResult, OutputImage
from engine.capabilities import Range
from engine.errors import BackendError, OutOfCreditError, ProtocolError
from engine.providers import bytedance_flux_pulid
from engine.providers.client import Reply
from engine.providers.failures import HttpFailure, job_failure, provider_message
from engine.providers.images import data_uri, output_image
from engine.providers.remote import RemoteBackend, Vendor, seed_text
from engine.providers.settings import SegmindSettings
from engine.request import GenerationRequest

log = logging.getLogger(__name__)

CAPABILITIES = bytedance_flux_pulid.capabilities(
    id_weight=Range(0, 3, 1.05),
    # The call answers with one image, whatever num_outputs says.
    num_images=Range(1, 1, 1, integer=True),
)

_IMAGE_KEYS = ("image", "images", "output", "outputs")


def _segmind_rules(failure: HttpFailure) -> BackendError | None:
    """Segmind answers 406 when the account has run out of credits."""
    return OutOfCreditError(failure.text) if failure.status == 406 else None


SEGMIND = Vendor(
    label="segmind",
    title="Segmind",
    key_setting="LIKENESS_SEGMIND__KEY",
    auth_header="x-api-key",
    auth_scheme="",
    rules=_segmind_rules,
)


class SegmindFluxPulidBackend(RemoteBackend[SegmindSettings, Reply]):
    """Segmind's documented call for this model is synchronous: there is no request id to store or resume."""

    name = "segmind-flux-pulid"
    capabilities = CAPABILITIES
    vendor = SEGMIND
    synchronous = True

    async def arguments(self, request: GenerationRequest) -> dict[str, Any]:
        return bytedance_flux_pulid.arguments(
            self.capabilities, request, face=data_uri(request.faces[0]), num_outputs=1
        )

    async def submit(self, arguments: dict[str, Any]) -> Reply:
        reply = await self.http.submit(f"{self.settings.base_url}/v1/flux-pulid", json_body=arguments)
        remaining = reply.headers.get("x-remaining-credits")
        if remaining is not None:
            log.info("%s: %s credits left on the account", self.name, remaining[:20])
        return reply

    async def collect(self, done: Reply, request: GenerationRequest) -> GenerationResult:
        images = await self._images(done)
        return GenerationResult(
            images=images,
            seed=seed_text(request),
            spend_usd=round(self.settings.usd_per_image * len(images), 6),
        )

    async def _images(self, reply: Reply) -> tuple[OutputImage, ...]:
        content_type = reply.content_type
        if content_type.startswith("image/"):
            return (output_image(reply.body),)
        if content_type == "application/json" or content_type.endswith("+json"):
            try:
                payload = json.loads(reply.body)
            except (ValueError, UnicodeDecodeError):
                raise ProtocolError("segmind answer is not valid JSON; the call may have been billed") from None
            refs = _image_refs(payload)
            if not refs:
                message = self.http.clean(provider_message(payload))
                if message:
                    raise job_failure(message, f"segmind: {message}")
                raise ProtocolError("segmind JSON answer holds no image")
            return await self.http.fetch_outputs(refs)
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
