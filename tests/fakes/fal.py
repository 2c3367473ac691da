"""A fake fal.ai queue for ``fal-ai/flux-pulid`` and ``fal-ai/pulid``, checking requests as fal documents.

Routes (names for ``fail``): ``submit`` POST /fal-ai/{model}; ``status`` GET …/requests/{id}/status;
``result`` GET …/requests/{id}; ``cancel`` PUT …/requests/{id}/cancel; ``cdn`` GET /cdn/{name}.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from aiohttp import web

from tests.fakes.providers_common import FakeProvider, is_image_reference, number_problem, origin, tiny_image

KEY = "test-key"
LOCKED = "User is locked. Reason: Exhausted balance. Top up your balance at fal.ai/dashboard/billing."
MODELS = ("flux-pulid", "pulid")


class FalOutcome(StrEnum):
    OK = "ok"
    ERROR = "error"  # COMPLETED with an error; the result answers 422 with the model's error
    NSFW = "nsfw"  # a black image flagged in has_nsfw_concepts
    STUCK = "stuck"  # IN_QUEUE forever
    DATA_URI = "data_uri"  # outputs inlined as data URIs


@dataclass
class FalScript:
    queue_ticks: int = 2  # status polls answered IN_QUEUE, position counting down to 0
    run_ticks: int = 1  # status polls answered IN_PROGRESS
    outcome: FalOutcome = FalOutcome.OK
    error_type: str = "image_load_error"
    error_message: str = "Failed to load the reference image"
    billable_units: bool = True
    output_ttl_s: float | None = None
    output: bytes | None = None  # a JPEG to return (a face, say) instead of a plain swatch


@dataclass
class FalJob:
    id: str
    model: str
    input: dict[str, Any]
    script: FalScript
    polls: int = 0
    cancelled: bool = False
    finished: bool = False
    result: dict[str, Any] | None = None
    units: float = 0.0
    log_times: list[float] = field(default_factory=list)

    def status(self) -> str:
        if self.cancelled:
            return "COMPLETED"
        if self.script.outcome is FalOutcome.STUCK or self.polls < self.script.queue_ticks:
            return "IN_QUEUE"
        if self.polls < self.script.queue_ticks + self.script.run_ticks:
            return "IN_PROGRESS"
        return "COMPLETED"

    def position(self) -> int:
        if self.script.outcome is FalOutcome.STUCK:
            return 0
        return max(0, self.script.queue_ticks - self.polls - 1)


class FakeFal(FakeProvider):
    """fal's queue protocol with tick-driven jobs: every status poll advances the job one step."""

    def __init__(self, *, key: str = KEY, clock: Callable[[], float] | None = None) -> None:
        super().__init__(clock=clock)
        self.key = key
        self.script = FalScript()
        self.next_scripts: list[FalScript] = []
        self.jobs: dict[str, FalJob] = {}
        self.locked = False
        self.premature_results = 0
        r = self.app.router
        r.add_post("/fal-ai/{model}", self._submit, name="submit")
        r.add_get("/fal-ai/{model}/requests/{rid}/status", self._status, name="status")
        r.add_get("/fal-ai/{model}/requests/{rid}", self._result, name="result")
        r.add_put("/fal-ai/{model}/requests/{rid}/cancel", self._cancel, name="cancel")

    def refuse(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") != f"Key {self.key}":
            return web.json_response({"detail": "No user found for Key ID and Secret"}, status=401)
        return None

    def _job(self, request: web.Request) -> FalJob | None:
        job = self.jobs.get(request.match_info["rid"])
        if job is None or job.model != request.match_info["model"]:
            return None
        return job

    async def _submit(self, request: web.Request) -> web.Response:
        model = request.match_info["model"]
        if model not in MODELS:
            return web.json_response({"detail": f"Application 'fal-ai/{model}' not found"}, status=404)
        if self.locked:
            return web.json_response({"detail": LOCKED}, status=403)
        try:
            payload = await request.json()
        except ValueError:
            return web.json_response({"detail": "Invalid JSON body", "error_type": "bad_request"}, status=400)
        problems = validate(model, payload)
        if problems:
            detail = [{"loc": ["body", name], "msg": msg, "type": "value_error"} for name, msg in problems]
            return web.json_response({"detail": detail}, status=422)
        script = self.next_scripts.pop(0) if self.next_scripts else self.script
        job = FalJob(self.new_id("fal"), model, payload, script)
        self.jobs[job.id] = job
        self.job_started()
        base = f"{origin(request)}/fal-ai/{model}/requests/{job.id}"
        return web.json_response(
            {
                "request_id": job.id,
                "status_url": f"{base}/status",
                "response_url": base,
                "cancel_url": f"{base}/cancel",
                "queue_position": job.position(),
            },
            headers={"x-fal-request-id": job.id},
        )

    def _finish(self, job: FalJob, request: web.Request) -> None:
        if job.finished:
            return
        job.finished = True
        self.job_finished()
        if job.cancelled or job.script.outcome is FalOutcome.ERROR:
            return
        size = job.input.get("image_size")
        width, height = (size["width"], size["height"]) if isinstance(size, dict) else (1024, 768)
        count = int(job.input.get("num_images", 1))
        job.units = round(width * height / 1_000_000 * count, 4)
        nsfw = job.script.outcome is FalOutcome.NSFW
        images = []
        for _ in range(count):
            data = tiny_image("jpeg", (16, 12), (0, 0, 0) if nsfw else (180, 140, 90))
            if job.script.output is not None and not nsfw:
                data = job.script.output
            if job.script.outcome is FalOutcome.DATA_URI:
                url = "data:image/jpeg;base64," + base64.b64encode(data).decode()
            else:
                url = self.publish(data, "image/jpeg", ttl_s=job.script.output_ttl_s, base=origin(request))
            images.append({"url": url, "width": 16, "height": 12, "content_type": "image/jpeg"})
        result: dict[str, Any] = {
            "images": images,
            "timings": {"inference": 1.25},
            "seed": 2**64 - 1,
            "prompt": job.input.get("prompt", ""),
        }
        if job.model == "flux-pulid":  # whether fal-ai/pulid reports NSFW is not documented
            result["has_nsfw_concepts"] = [nsfw] * count
        job.result = result

    async def _status(self, request: web.Request) -> web.Response:
        job = self._job(request)
        if job is None:
            return web.json_response({"detail": "Request not found"}, status=404)
        state = job.status()
        body: dict[str, Any] = {"status": state, "request_id": job.id}
        if state == "IN_QUEUE":
            body["queue_position"] = job.position()
        elif state == "IN_PROGRESS":
            body["logs"] = [{"message": "rendering", "level": "INFO"}]
        else:
            self._finish(job, request)
            body["metrics"] = {"inference_time": 1.25}
            if job.cancelled:
                body["error"] = "Request was cancelled by the client"
                body["error_type"] = "client_cancelled"
            elif job.script.outcome is FalOutcome.ERROR:
                body["error"] = job.script.error_message
                body["error_type"] = job.script.error_type
        job.polls += 1
        return web.json_response(body)

    async def _result(self, request: web.Request) -> web.Response:
        job = self._job(request)
        if job is None:
            return web.json_response({"detail": "Request not found"}, status=404)
        if not job.finished:
            self.premature_results += 1
            return web.json_response({"detail": "Request is still in progress"}, status=400)
        if job.cancelled:
            return web.json_response({"detail": "Request was cancelled", "error_type": "client_cancelled"}, status=499)
        if job.script.outcome is FalOutcome.ERROR:
            detail = [
                {
                    "loc": ["body", "reference_image_url"],
                    "msg": job.script.error_message,
                    "type": job.script.error_type,
                }
            ]
            return web.json_response(
                {"detail": detail}, status=422, headers={"X-Fal-Error-Type": job.script.error_type}
            )
        headers = {"x-fal-request-id": job.id}
        if job.script.billable_units:
            headers["x-fal-billable-units"] = str(job.units)
        return web.json_response(job.result, headers=headers)

    async def _cancel(self, request: web.Request) -> web.Response:
        job = self._job(request)
        if job is None:
            return web.json_response({"detail": "Request not found"}, status=404)
        if job.finished or job.status() == "COMPLETED":
            return web.json_response({"status": "ALREADY_COMPLETED"}, status=400)
        job.cancelled = True
        self._finish(job, request)
        return web.json_response({"status": "CANCELLATION_REQUESTED"}, status=202)


_FLUX_FIELDS = {
    "prompt", "reference_image_url", "image_size", "num_inference_steps", "seed", "guidance_scale",
    "negative_prompt", "sync_mode", "start_step", "true_cfg", "id_weight", "enable_safety_checker",
    "max_sequence_length",
}  # fmt: skip
_PULID_FIELDS = {
    "reference_images", "prompt", "negative_prompt", "num_images", "guidance_scale", "num_inference_steps",
    "seed", "image_size", "id_scale", "mode", "id_mix",
}  # fmt: skip
_SIZES = {"square_hd", "square", "portrait_4_3", "portrait_16_9", "landscape_4_3", "landscape_16_9"}


def validate(model: str, payload: Any) -> list[tuple[str, str]]:
    """Problems with a submit body, as (field, message), following the model's documented schema."""
    if not isinstance(payload, dict):
        return [("body", "must be an object")]
    problems: list[tuple[str, str]] = []
    allowed = _FLUX_FIELDS if model == "flux-pulid" else _PULID_FIELDS
    problems += [(name, "extra fields not permitted") for name in payload if name not in allowed]
    if not isinstance(payload.get("prompt"), str) or not payload["prompt"]:
        problems.append(("prompt", "field required"))

    def check(name: str, low: float, high: float, integer: bool = False) -> None:
        if name in payload:
            problem = number_problem(name, payload[name], low, high, integer=integer)
            if problem:
                problems.append((name, problem))

    size = payload.get("image_size")
    if size is not None:
        if isinstance(size, dict):
            for side in ("width", "height"):
                problem = number_problem(side, size.get(side), 1, 14142, integer=True)
                if problem:
                    problems.append(("image_size", problem))
        elif size not in _SIZES:
            problems.append(("image_size", "unknown image size"))
    check("seed", 0, 2**64 - 1, integer=True)
    if model == "flux-pulid":
        if not is_image_reference(payload.get("reference_image_url")):
            problems.append(("reference_image_url", "field required: an image URL or data URI"))
        check("num_inference_steps", 1, 50, integer=True)
        check("guidance_scale", 0, 20)
        check("start_step", 0, 50, integer=True)
        check("true_cfg", 1, 10)
        check("id_weight", 0, 1)
        if "max_sequence_length" in payload and payload["max_sequence_length"] not in ("128", "256", "512"):
            problems.append(("max_sequence_length", "value is not a valid enumeration member"))
        for flag in ("enable_safety_checker", "sync_mode"):
            if flag in payload and not isinstance(payload[flag], bool):
                problems.append((flag, "value could not be parsed to a boolean"))
    else:
        refs = payload.get("reference_images")
        if not isinstance(refs, list) or not refs:
            problems.append(("reference_images", "field required"))
        else:
            for ref in refs:
                if not isinstance(ref, dict) or not is_image_reference(ref.get("image_url")):
                    problems.append(("reference_images", "each item needs an image_url"))
        check("num_images", 1, 8, integer=True)
        check("num_inference_steps", 1, 100, integer=True)
        check("guidance_scale", 0, 20)
        check("id_scale", 0, 5)
        if "mode" in payload and payload["mode"] not in ("fidelity", "extreme style"):
            problems.append(("mode", "value is not a valid enumeration member"))
        if "id_mix" in payload and not isinstance(payload["id_mix"], bool):
            problems.append(("id_mix", "value could not be parsed to a boolean"))
    return problems


def start_fal(**kwargs: Any) -> FakeFal:
    """A FakeFal to run on 127.0.0.1 for the duration of an ``async with`` block."""
    return FakeFal(**kwargs)
