"""A fake Segmind API for ``flux-pulid``: the synchronous v1 call, answered with image bytes (or JSON).

Routes (names for ``fail``): ``generate`` POST /v1/flux-pulid; ``cdn`` GET /cdn/{name}.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
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
    tiny_image,
)

KEY = "sg-test-key"


class SegmindAnswer(StrEnum):
    IMAGE = "image"  # raw bytes with the output format's Content-Type, as the model page says
    JSON_BASE64 = "json_base64"  # {"image": "<base64>"}
    JSON_URL = "json_url"  # {"output": ["<url>"]}


class FakeSegmind(FakeProvider):
    """Segmind's v1 call; ``work_s`` keeps each call open (really) to observe concurrency."""

    def __init__(self, *, key: str = KEY, clock: Callable[[], float] | None = None) -> None:
        super().__init__(clock=clock)
        self.key = key
        self.answer = SegmindAnswer.IMAGE
        self.credits = 1000.0
        self.work_s = 0.0
        self.jobs = 0
        self.app.router.add_post("/v1/flux-pulid", self._generate, name="generate")

    @staticmethod
    def _error(status: int, message: str) -> web.Response:
        return web.json_response({"error": message}, status=status)

    def refuse(self, request: web.Request) -> web.Response | None:
        return None if request.headers.get("x-api-key") == self.key else self._error(401, "Invalid API key")

    async def _generate(self, request: web.Request) -> web.Response:
        if self.credits <= 0:
            return self._error(406, "Not enough credits")
        try:
            payload = await request.json()
        except ValueError:
            return self._error(400, "Invalid JSON body")
        problem = validate(payload)
        if problem:
            return self._error(400, problem)
        self.jobs += 1
        self.job_started()
        try:
            if self.work_s:
                await asyncio.sleep(self.work_s)
            fmt = payload.get("output_format", "webp")
            data = tiny_image(fmt, (14, 18))
            self.credits -= 0.036
            headers = {"x-remaining-credits": f"{self.credits:.3f}", "x-rate-limit-remaining": "4"}
            if self.answer is SegmindAnswer.JSON_BASE64:
                return web.json_response({"image": base64.b64encode(data).decode()}, headers=headers)
            if self.answer is SegmindAnswer.JSON_URL:
                url = self.publish(data, CONTENT_TYPES[fmt], base=origin(request))
                return web.json_response({"status": "COMPLETED", "output": [url]}, headers=headers)
            return web.Response(body=data, content_type=CONTENT_TYPES[fmt], headers=headers)
        finally:
            self.job_finished()


def validate(payload: Any) -> str | None:
    """The first problem with a request body, following the model page's parameter table."""
    if not isinstance(payload, dict):
        return "Request body must be a JSON object"
    extra = sorted(set(payload) - FLUX_PULID_FIELDS)
    if extra:
        return f"Unknown parameter: {extra[0]}"
    if not isinstance(payload.get("prompt"), str) or not payload["prompt"]:
        return "prompt is required"
    if not is_image_reference(payload.get("main_face_image")):
        return "main_face_image is required: an image URL or base64 image"
    problems = flux_pulid_number_problems(payload)
    if problems:
        return problems[0][1]
    if payload.get("output_format", "webp") not in ("png", "jpg", "webp"):
        return "output_format must be one of png, jpg, webp"
    return None


def start_segmind(**kwargs: Any) -> FakeSegmind:
    """A FakeSegmind to run on 127.0.0.1 for the duration of an ``async with`` block."""
    return FakeSegmind(**kwargs)
