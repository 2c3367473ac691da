"""Replicate backend for the community model ``bytedance/flux-pulid``, pinned to a configured version."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel

from engine.backend import GenerationResult, ProviderRef, Stage
from engine.capabilities import Range
from engine.errors import AuthError, BackendError, ContentPolicyError, OutOfCreditError
from engine.providers import bytedance_flux_pulid
from engine.providers.client import Reply
from engine.providers.failures import HttpFailure, model_or_protocol
from engine.providers.images import data_uri
from engine.providers.remote import JobStates, Pending, PollSchedule, RemoteBackend, Vendor, seed_text
from engine.providers.settings import ReplicateSettings
from engine.request import GenerationRequest

log = logging.getLogger(__name__)

# Replicate recommends data URLs only for small files; larger photos go through its file upload.
DATA_URI_MAX_BYTES = 256 * 1024

CAPABILITIES = bytedance_flux_pulid.capabilities(
    id_weight=Range(0, 3, 1),
    num_images=Range(1, 4, 1, integer=True),
)


def _replicate_rules(failure: HttpFailure) -> BackendError | None:
    """Replicate answers 402 when the account has no credit, and 422 for a version that is not there."""
    if failure.status == 402:
        return OutOfCreditError(failure.text)
    if failure.status == 422 and "version" in failure.message.lower():
        return AuthError(failure.text)
    return None


REPLICATE = Vendor(
    label="replicate", title="Replicate", key_setting="LIKENESS_REPLICATE__TOKEN", rules=_replicate_rules
)


# "aborted": a Cancel-After deadline passed before the prediction started; not billed.
STATES = JobStates(
    working={"starting": Stage.QUEUED, "processing": Stage.RUNNING},
    succeeded="succeeded",
    failed="failed",
    ended={"canceled": "was canceled at the provider", "aborted": "was aborted before it started (not billed)"},
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


class ReplicateFluxPulidBackend(RemoteBackend[ReplicateSettings, _Prediction]):
    """Create a prediction, poll ``urls.get`` until a terminal status, download the outputs at once."""

    name = "replicate-flux-pulid"
    capabilities = CAPABILITIES
    vendor = REPLICATE
    poll_schedule = PollSchedule(first_s=1.0, factor=1.3, max_s=5.0)

    def unavailable_reason(self) -> str | None:
        reason = super().unavailable_reason()
        if reason is None and self.settings.version_id is None:
            return (
                "no Replicate model version configured (LIKENESS_REPLICATE__VERSION): "
                "bytedance/flux-pulid is a community model and must be pinned to a version"
            )
        return reason

    def _prediction_url(self, prediction_id: str) -> str:
        return f"{self.settings.base_url}/v1/predictions/{prediction_id}"

    async def arguments(self, request: GenerationRequest) -> dict[str, Any]:
        face = await self._face(request.faces[0])
        return bytedance_flux_pulid.arguments(self.capabilities, request, face=face, num_outputs=request.num_images)

    async def _face(self, face: bytes) -> str:
        if len(face) <= DATA_URI_MAX_BYTES:
            return data_uri(face)

        def parse(reply: Reply) -> str:
            return model_or_protocol(_File.model_validate, reply.json(), "replicate file").urls.get

        url = f"{self.settings.base_url}/v1/files"
        return await self.http.upload_image(url, face, field_name="content", parse=parse)

    async def submit(self, arguments: dict[str, Any]) -> ProviderRef:
        body = {"version": self.settings.version_id, "input": arguments}
        reply = await self.http.submit(f"{self.settings.base_url}/v1/predictions", json_body=body)
        prediction = model_or_protocol(_Prediction.model_validate, reply.json(), "replicate create")
        base = self._prediction_url(prediction.id)
        return ProviderRef(
            backend=self.name,
            request_id=prediction.id,
            urls={"get": prediction.urls.get or base, "cancel": prediction.urls.cancel or f"{base}/cancel"},
        )

    def cancel_call(self, ref: ProviderRef) -> tuple[str, str] | None:
        return "POST", ref.urls.get("cancel") or f"{self._prediction_url(ref.request_id)}/cancel"

    async def poll(self, ref: ProviderRef) -> Pending | _Prediction:
        url = ref.urls.get("get") or self._prediction_url(ref.request_id)
        prediction = _Prediction.model_validate(await self.http.get_json(url, what="prediction", check=_check))
        where = f"replicate prediction {prediction.id}"
        return self.settled(STATES, prediction.status, where=where, error=prediction.error) or prediction

    async def collect(self, done: _Prediction, request: GenerationRequest) -> GenerationResult:
        outputs = [done.output] if isinstance(done.output, str) else list(done.output or [])
        if not outputs:
            # Replicate's safety filter can drop every image and still report success.
            raise ContentPolicyError(
                f"replicate prediction {done.id} succeeded without outputs (filtered by the safety checker)"
            )
        images = await self.http.fetch_outputs(outputs)
        predict_time = done.metrics.predict_time if done.metrics else None
        if predict_time is None:
            log.warning("%s %s: no predict_time; spend recorded as 0", self.name, done.id)
        return GenerationResult(
            images=images,
            seed=seed_text(request),
            spend_usd=round((predict_time or 0.0) * self.settings.usd_per_second, 6),
        )


def _check(payload: Any) -> None:
    model_or_protocol(_Prediction.model_validate, payload, "replicate prediction")
