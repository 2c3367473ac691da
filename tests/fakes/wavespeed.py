"""A fake WaveSpeed API for ``wavespeed-ai/flux-pulid``, answering in the ``{code, message, data}`` envelope.

Routes (names for ``fail``): ``submit`` POST /api/v3/wavespeed-ai/flux-pulid; ``result`` GET
/api/v3/predictions/{id}/result; ``prediction`` GET /api/v3/predictions/{id}; ``upload`` POST
/api/v3/media/upload/binary; ``cdn`` GET /cdn/{name}.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from aiohttp import web

from tests.fakes.providers_common import CONTENT_TYPES, FakeProvider, number_problem, origin, tick, tiny_image

KEY = "ws-test-key"
_SIZE = re.compile(r"^(\d+)\*(\d+)$")


class WaveSpeedOutcome(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"  # still HTTP 200 and code 200: only data.status and data.error tell
    NSFW = "nsfw"
    BASE64 = "base64"  # outputs inlined as base64 (as with enable_base64_output)


@dataclass
class WaveSpeedScript:
    created_ticks: int = 1  # result polls answered "created"
    processing_ticks: int = 1  # result polls answered "processing"
    outcome: WaveSpeedOutcome = WaveSpeedOutcome.COMPLETED
    error: str = "Face not detected in the input image"
    stuck: bool = False


@dataclass
class Task:
    id: str
    input: dict[str, Any]
    script: WaveSpeedScript
    polls: int = 0
    status: str = "created"
    outputs: list[str] | None = None
    nsfw: list[bool] | None = None
    error: str = ""
    finished: bool = False


def envelope(data: Any, code: int = 200, message: str = "success") -> dict[str, Any]:
    return {"code": code, "message": message, "data": data}


class FakeWaveSpeed(FakeProvider):
    """WaveSpeed's task API with tick-driven tasks: every result poll advances one step."""

    def __init__(
        self,
        *,
        key: str = KEY,
        clock: Callable[[], float] | None = None,
        max_concurrent: int | None = None,
    ) -> None:
        super().__init__(clock=clock)
        self.key = key
        self.max_concurrent = max_concurrent  # Bronze accounts run two tasks at a time
        self.script = WaveSpeedScript()
        self.next_scripts: list[WaveSpeedScript] = []
        self.tasks: dict[str, Task] = {}
        self.uploads: dict[str, bytes] = {}
        self.out_of_credit = False
        r = self.app.router
        r.add_post("/api/v3/wavespeed-ai/flux-pulid", self._submit, name="submit")
        r.add_get("/api/v3/predictions/{tid}/result", self._result, name="result")
        r.add_get("/api/v3/predictions/{tid}", self._result, name="prediction")
        r.add_post("/api/v3/media/upload/binary", self._upload, name="upload")

    def refuse(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") != f"Bearer {self.key}":
            return web.json_response(envelope(None, 401, "Unauthorized: invalid API key"), status=401)
        return None

    def _task_body(self, request: web.Request, task: Task) -> dict[str, Any]:
        return {
            "id": task.id,
            "model": "wavespeed-ai/flux-pulid",
            "outputs": task.outputs or [],
            "urls": {"get": f"{origin(request)}/api/v3/predictions/{task.id}/result"},
            "has_nsfw_contents": task.nsfw or [],
            "status": task.status,
            "created_at": "2025-01-01T00:00:00.000Z",
            "error": task.error,
            "timings": {"inference": 2100} if task.finished else {},
        }

    async def _submit(self, request: web.Request) -> web.Response:
        if self.out_of_credit:
            # The balance failure is not documented; it is modelled inside the envelope.
            return web.json_response(envelope(None, 400, "Insufficient balance, please top up your account"))
        if self.max_concurrent is not None and self.in_flight >= self.max_concurrent:
            return web.json_response(envelope(None, 429, "Too many requests: concurrency limit reached"), status=429)
        try:
            payload = await request.json()
        except ValueError:
            return web.json_response(envelope(None, 400, "invalid JSON body"), status=400)
        problem = self._validate(payload)
        if problem:
            return web.json_response(envelope(None, 400, problem), status=400)
        script = self.next_scripts.pop(0) if self.next_scripts else self.script
        task = Task(self.new_id("ws"), payload, script)
        self.tasks[task.id] = task
        self.job_started()
        return web.json_response(envelope(self._task_body(request, task)))

    def _validate(self, payload: Any) -> str | None:
        if not isinstance(payload, dict):
            return "body must be an object"
        allowed = {
            "prompt", "image", "size", "guidance_scale", "seed", "output_format",
            "enable_base64_output", "enable_sync_mode",
        }  # fmt: skip
        extra = sorted(set(payload) - allowed)
        if extra:
            return f"unknown parameter: {extra[0]}"
        if not isinstance(payload.get("prompt"), str) or not payload["prompt"]:
            return "prompt is required"
        image = payload.get("image")
        if not isinstance(image, str) or not image.startswith(("http://", "https://")):
            return "image is required and must be a URL"
        size = payload.get("size", "1024*1024")
        match = _SIZE.match(size) if isinstance(size, str) else None
        if match is None:
            return "size must look like 1024*1024"
        if not all(256 <= int(side) <= 1536 for side in match.groups()):
            return "size must be between 256 and 1536 per dimension"
        if "guidance_scale" in payload:
            problem = number_problem("guidance_scale", payload["guidance_scale"], 0, 20)
            if problem:
                return problem
        if "seed" in payload:
            problem = number_problem("seed", payload["seed"], -1, 2147483647, integer=True)
            if problem:
                return problem
        if payload.get("output_format", "jpeg") not in ("jpeg", "png", "webp"):
            return "output_format must be one of jpeg, png, webp"
        return None

    def _advance(self, task: Task, request: web.Request) -> None:
        phases = (("created", task.script.created_ticks), ("processing", task.script.processing_ticks))
        if tick(task, phases, stuck=task.script.stuck):
            self._finish(task, request)

    def _finish(self, task: Task, request: web.Request) -> None:
        task.finished = True
        self.job_finished()
        outcome = task.script.outcome
        if outcome is WaveSpeedOutcome.FAILED:
            task.status, task.error = "failed", task.script.error
            return
        task.status = "completed"
        fmt = task.input.get("output_format", "jpeg")
        nsfw = outcome is WaveSpeedOutcome.NSFW
        data = tiny_image(fmt, (10, 10), (0, 0, 0) if nsfw else (90, 160, 200))
        if outcome is WaveSpeedOutcome.BASE64:
            task.outputs = [base64.b64encode(data).decode()]
        else:
            task.outputs = [self.publish(data, CONTENT_TYPES[fmt], base=origin(request))]
        task.nsfw = [nsfw]

    async def _result(self, request: web.Request) -> web.Response:
        task = self.tasks.get(request.match_info["tid"])
        if task is None:
            return web.json_response(envelope(None, 404, "prediction not found"), status=404)
        self._advance(task, request)
        return web.json_response(envelope(self._task_body(request, task)))

    async def _upload(self, request: web.Request) -> web.Response:
        if not request.content_type.startswith("multipart/"):
            return web.json_response(envelope(None, 400, "expected multipart/form-data"), status=400)
        form = await request.post()
        file = form.get("file")
        if not isinstance(file, web.FileField):
            return web.json_response(envelope(None, 400, "missing multipart field 'file'"), status=400)
        data = file.file.read()
        if len(data) > 20 * 1024 * 1024:
            return web.json_response(envelope(None, 413, "file too large"), status=413)
        url = self.publish(data, file.content_type, base=origin(request))
        self.uploads[url] = data
        return web.json_response(
            envelope({"type": "image", "download_url": url, "filename": file.filename, "size": len(data)})
        )


def start_wavespeed(**kwargs: Any) -> FakeWaveSpeed:
    """A FakeWaveSpeed to run on 127.0.0.1 for the duration of an ``async with`` block."""
    return FakeWaveSpeed(**kwargs)
