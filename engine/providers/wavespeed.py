"""WaveSpeed backend for ``wavespeed-ai/flux-pulid``: upload the photo, submit, poll the result every ≥2 s."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from engine.backend import GenerationResult, ProviderRef, Stage
from engine.capabilities import Capabilities, Choice, Range
from engine.errors import ProviderFailedError
from engine.providers.client import Reply, RetryPolicy
from engine.providers.failures import MalformedReplyError, model_or_protocol
from engine.providers.remote import JobStates, Pending, PollSchedule, RemoteBackend, Vendor, seed_text
from engine.providers.settings import WaveSpeedSettings
from engine.request import GenerationRequest

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

WAVESPEED = Vendor(label="wavespeed", title="WaveSpeed", key_setting="LIKENESS_WAVESPEED__KEY")


STATES = JobStates(
    working={"created": Stage.QUEUED, "processing": Stage.RUNNING},
    succeeded="completed",
    failed="failed",
    # Not in the model's page but reported by the platform for tasks that ended another way.
    ended={end: f"ended as {end}" for end in ("cancelled", "timeout", "deleted")},
)


class _Task(BaseModel):
    id: str
    status: str
    outputs: list[str] | None = None
    has_nsfw_contents: list[bool] | None = None
    error: str | None = None


class _Upload(BaseModel):
    download_url: str


class WaveSpeedFluxPulidBackend(RemoteBackend[WaveSpeedSettings, _Task]):
    """WaveSpeed's async task API; it offers no cancel, so a cancelled job is only abandoned."""

    name = "wavespeed-flux-pulid"
    capabilities = CAPABILITIES
    vendor = WAVESPEED
    retry_policy = RetryPolicy(base_delay_s=MIN_POLL_S)
    poll_schedule = PollSchedule(first_s=MIN_POLL_S, factor=1.25, max_s=8.0)
    min_poll_gap_s = MIN_POLL_S
    wait_before_first_poll = True

    def _envelope_data(self, payload: Any, headers: Mapping[str, str], *, submit: bool, where: str) -> Any:
        """``data`` of WaveSpeed's ``{code, message, data}`` envelope; a code other than 200 is a failure."""
        if not isinstance(payload, dict) or not isinstance(payload.get("code"), int):
            raise MalformedReplyError(f"wavespeed {where}: answer is not an envelope")
        code = payload["code"]
        if code != 200:
            message = str(payload.get("message") or "")
            raise self.http.failure(code, message, headers, submit=submit, where=where)
        return payload.get("data")

    def _parse_task(self, reply: Reply, *, submit: bool, where: str) -> _Task:
        data = self._envelope_data(reply.json(), reply.headers, submit=submit, where=where)
        return model_or_protocol(_Task.model_validate, data, f"wavespeed {where}")

    async def arguments(self, request: GenerationRequest) -> dict[str, Any]:
        def parse(reply: Reply) -> str:
            data = self._envelope_data(reply.json(), reply.headers, submit=False, where="upload")
            return model_or_protocol(_Upload.model_validate, data, "wavespeed upload").download_url

        # The model takes the photo by URL only.
        url = f"{self.settings.base_url}/api/v3/media/upload/binary"
        image = await self.http.upload_image(url, request.faces[0], field_name="file", parse=parse)
        width, height = int(self.value(request, "width")), int(self.value(request, "height"))
        return {
            "prompt": request.prompt,
            "image": image,
            "size": f"{width}*{height}",
            "guidance_scale": float(self.value(request, "guidance")),
            "seed": -1 if request.seed is None else request.seed,
            "output_format": self.value(request, "output_format"),
            "enable_base64_output": False,
            "enable_sync_mode": False,
        }

    def _result_url(self, task_id: str) -> str:
        # Poll through the configured base URL so operators' gateways stay in the path.
        return f"{self.settings.base_url}/api/v3/predictions/{task_id}/result"

    async def submit(self, arguments: dict[str, Any]) -> ProviderRef:
        url = f"{self.settings.base_url}/api/v3/wavespeed-ai/flux-pulid"
        task = self._parse_task(await self.http.submit(url, json_body=arguments), submit=True, where="submit")
        return ProviderRef(backend=self.name, request_id=task.id, urls={"get": self._result_url(task.id)})

    async def poll(self, ref: ProviderRef) -> Pending | _Task:
        url = ref.urls.get("get") or self._result_url(ref.request_id)
        task = await self.http.call(
            "GET", url, what="result", parse=lambda reply: self._parse_task(reply, submit=False, where="result")
        )
        return self.settled(STATES, task.status, where=f"wavespeed task {task.id}", error=task.error) or task

    async def collect(self, done: _Task, request: GenerationRequest) -> GenerationResult:
        if not done.outputs:
            raise ProviderFailedError(f"wavespeed task {done.id} completed without outputs")
        images = await self.http.fetch_outputs(done.outputs, done.has_nsfw_contents or [])
        return GenerationResult(images=images, seed=seed_text(request), spend_usd=round(USD_PER_IMAGE * len(images), 6))
