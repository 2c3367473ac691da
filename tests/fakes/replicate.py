"""A fake Replicate API for the community model ``bytedance/flux-pulid``, checking requests as documented.

Routes (names for ``fail``): ``create`` POST /v1/predictions; ``get`` GET /v1/predictions/{id};
``cancel`` POST /v1/predictions/{id}/cancel; ``files`` POST /v1/files; ``model_create`` POST
/v1/models/{owner}/{name}/predictions (404: community models need a version); ``cdn`` GET /cdn/{name}.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from aiohttp import web

from tests.fakes.providers_common import (
    CONTENT_TYPES,
    FLUX_PULID_FIELDS,
    FakeProvider,
    flux_pulid_number_problems,
    is_image_reference,
    origin,
    tick,
    tiny_image,
)

TOKEN = "r8_test-token"
VERSION = "8baa7ef2255075b46f4d91cd238c21d31181b3e6a864463f967960bb0112525b"
OUTPUT_TTL_S = 3600.0  # Replicate deletes API outputs after an hour


class ReplicateOutcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    ABORTED = "aborted"
    EMPTY = "empty"  # succeeded with no outputs (the safety filter dropped them)
    DATA_URI = "data_uri"  # outputs as data: URIs


@dataclass
class ReplicateScript:
    starting_ticks: int = 1  # GETs answered "starting"
    processing_ticks: int = 1  # GETs answered "processing"
    outcome: ReplicateOutcome = ReplicateOutcome.SUCCEEDED
    error: str = "NSFW content detected. Try running it again, or try a different prompt."
    predict_time: float = 4.5
    stuck: bool = False


@dataclass
class Prediction:
    id: str
    input: dict[str, Any]
    script: ReplicateScript
    polls: int = 0
    status: str = "starting"
    output: Any = None
    error: str | None = None
    finished: bool = False


class FakeReplicate(FakeProvider):
    """Replicate's predictions API with tick-driven predictions: every GET advances one step."""

    expired_status = 404
    open_routes = frozenset({"cdn", "model_create"})

    def __init__(self, *, token: str = TOKEN, version: str = VERSION, clock: Callable[[], float] | None = None) -> None:
        super().__init__(clock=clock)
        self.token = token
        self.version = version
        self.script = ReplicateScript()
        self.next_scripts: list[ReplicateScript] = []
        self.predictions: dict[str, Prediction] = {}
        self.files: dict[str, bytes] = {}
        self.file_urls: set[str] = set()
        self.out_of_credit = False
        r = self.app.router
        r.add_post("/v1/predictions", self._create, name="create")
        r.add_get("/v1/predictions/{pid}", self._get, name="get")
        r.add_post("/v1/predictions/{pid}/cancel", self._cancel, name="cancel")
        r.add_post("/v1/files", self._upload, name="files")
        r.add_post("/v1/models/{owner}/{model}/predictions", self._model_create, name="model_create")

    @staticmethod
    def _problem(status: int, title: str, detail: str, **extra: Any) -> web.Response:
        body = {"title": title, "detail": detail, "status": status, **extra}
        return web.json_response(body, status=status, content_type="application/problem+json")

    def refuse(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return self._problem(401, "Unauthenticated", "You did not pass a valid authentication token")
        return None

    def _body(self, request: web.Request, p: Prediction) -> dict[str, Any]:
        base = f"{origin(request)}/v1/predictions/{p.id}"
        return {
            "id": p.id,
            "model": "bytedance/flux-pulid",
            "version": self.version,
            "input": p.input,
            "status": p.status,
            "output": p.output,
            "error": p.error,
            "logs": "",
            "metrics": {"predict_time": p.script.predict_time} if p.status == "succeeded" else {},
            "created_at": "2025-01-01T00:00:00.000Z",
            "urls": {"get": base, "cancel": f"{base}/cancel"},
        }

    async def _model_create(self, request: web.Request) -> web.Response:
        return self._problem(404, "Not found", "The requested resource could not be found")

    async def _create(self, request: web.Request) -> web.Response:
        if self.out_of_credit:
            return self._problem(
                402, "Insufficient credit", "You have insufficient credit to run this model. Go to billing."
            )
        try:
            payload = await request.json()
        except ValueError:
            return self._problem(400, "Bad request", "The request body is not valid JSON")
        if not isinstance(payload, dict) or payload.get("version") != self.version:
            return self._problem(422, "Invalid version or not permitted", "The specified version does not exist")
        problems = validate_input(payload.get("input"), self.file_urls)
        if problems:
            fields = [{"type": "invalid", "field": name, "description": msg} for name, msg in problems]
            detail = "\n".join(f"- {name}: {msg}" for name, msg in problems)
            return self._problem(422, "Input validation failed", detail, invalid_fields=fields)
        script = self.next_scripts.pop(0) if self.next_scripts else self.script
        prediction = Prediction(self.new_id("pred"), payload["input"], script)
        self.predictions[prediction.id] = prediction
        self.job_started()
        return web.json_response(self._body(request, prediction), status=201)

    def _advance(self, p: Prediction, request: web.Request) -> None:
        phases = (("starting", p.script.starting_ticks), ("processing", p.script.processing_ticks))
        if tick(p, phases, stuck=p.script.stuck):
            self._finish(p, request)

    def _finish(self, p: Prediction, request: web.Request) -> None:
        p.finished = True
        self.job_finished()
        outcome = p.script.outcome
        if outcome is ReplicateOutcome.FAILED:
            p.status, p.error = "failed", p.script.error
            return
        if outcome in (ReplicateOutcome.CANCELED, ReplicateOutcome.ABORTED):
            p.status = outcome.value
            return
        p.status = "succeeded"
        if outcome is ReplicateOutcome.EMPTY:
            p.output = []
            return
        fmt = p.input.get("output_format", "webp")
        content_type = CONTENT_TYPES[fmt]
        outputs = []
        for _ in range(int(p.input.get("num_outputs", 1))):
            data = tiny_image(fmt, (12, 16))
            if outcome is ReplicateOutcome.DATA_URI:
                outputs.append(f"data:{content_type};base64,{base64.b64encode(data).decode()}")
            else:
                outputs.append(self.publish(data, content_type, ttl_s=OUTPUT_TTL_S, base=origin(request)))
        p.output = outputs

    async def _get(self, request: web.Request) -> web.Response:
        p = self.predictions.get(request.match_info["pid"])
        if p is None:
            return self._problem(404, "Not found", "Prediction not found")
        self._advance(p, request)
        return web.json_response(self._body(request, p))

    async def _cancel(self, request: web.Request) -> web.Response:
        p = self.predictions.get(request.match_info["pid"])
        if p is None:
            return self._problem(404, "Not found", "Prediction not found")
        if not p.finished:
            p.finished = True
            p.status = "canceled"
            self.job_finished()
        return web.json_response(self._body(request, p))

    async def _upload(self, request: web.Request) -> web.Response:
        if not request.content_type.startswith("multipart/"):
            return self._problem(400, "Bad request", "Expected multipart/form-data")
        form = await request.post()
        content = form.get("content")
        if not isinstance(content, web.FileField):
            return self._problem(400, "Bad request", "Missing multipart field 'content'")
        data = content.file.read()
        file_id = self.new_id("file")
        self.files[file_id] = data
        url = f"{origin(request)}/v1/files/{file_id}"
        self.file_urls.add(url)
        return web.json_response(
            {
                "id": file_id,
                "name": content.filename,
                "content_type": content.content_type,
                "size": len(data),
                "urls": {"get": url},
                "expires_at": "2025-01-02T00:00:00.000Z",
            },
            status=201,
        )


def validate_input(values: Any, file_urls: set[str]) -> list[tuple[str, str]]:
    """Problems with a prediction's input, following the model's documented schema."""
    if not isinstance(values, dict):
        return [("input", "must be an object")]
    problems = [(name, "Additional property is not allowed") for name in values if name not in FLUX_PULID_FIELDS]
    face = values.get("main_face_image")
    if face is None:
        problems.append(("main_face_image", "main_face_image is required"))
    elif not (is_image_reference(face) and (face.startswith("data:") or face in file_urls)):
        problems.append(("main_face_image", "Does not match format 'uri' of a readable image"))
    elif face.startswith("data:") and len(face) > 400 * 1024:
        problems.append(("main_face_image", "data URLs are for files of 256 KB or less"))
    problems += flux_pulid_number_problems(values)
    if "output_format" in values and values["output_format"] not in ("png", "jpg", "webp"):
        problems.append(("output_format", "output_format must be one of: png, jpg, webp"))
    return problems


def start_replicate(**kwargs: Any) -> FakeReplicate:
    """A FakeReplicate to run on 127.0.0.1 for the duration of an ``async with`` block."""
    return FakeReplicate(**kwargs)
