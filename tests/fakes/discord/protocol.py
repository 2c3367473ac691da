"""Discord's REST wire format: JSON and multipart bodies, error bodies, and rate-limit answers."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import BodyPartReader, web

from tests.fakes.discord.models import Json


class ApiError(Exception):
    def __init__(self, status: int, code: int, message: str, errors: Json | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.errors = status, code, message, errors


def form_error(path: str, code: str, message: str) -> ApiError:
    errors: Json = {"_errors": [{"code": code, "message": message}]}
    for key in reversed(path.split(".")):
        errors = {key: errors}
    return ApiError(400, 50035, "Invalid Form Body", errors)


@dataclass(frozen=True)
class FilePart:
    field: str
    filename: str
    content_type: str | None
    data: bytes


@dataclass(frozen=True)
class Body:
    json: Any = None
    files: tuple[FilePart, ...] = ()


BODY = web.RequestKey("body", Body)


@dataclass(eq=False)
class RequestRecord:
    method: str
    path: str
    route: str | None
    query: dict[str, str]
    json: Any
    files: list[FilePart]
    status: int
    at: float


@dataclass(eq=False)
class Fault:
    method: str
    route: str
    remaining: int
    respond: Callable[[], web.Response]


async def read_body(request: web.Request) -> Body:
    if not request.body_exists:
        return Body()
    if request.content_type == "multipart/form-data":
        payload: Any = None
        files: list[FilePart] = []
        reader = await request.multipart()
        async for part in reader:
            if not isinstance(part, BodyPartReader):
                continue
            if part.name == "payload_json":
                payload = json.loads(await part.text())
            else:
                content = bytes(await part.read())
                files.append(FilePart(part.name or "", part.filename or "", part.headers.get("Content-Type"), content))
        return Body(payload, tuple(files))
    raw = await request.read()
    return Body(json.loads(raw) if raw else None)


def ok(data: Any, status: int = 200) -> web.Response:
    # discord.py only parses JSON when the content type is exactly this, with no charset.
    headers = {
        "Content-Type": "application/json",
        "X-RateLimit-Limit": "50",
        "X-RateLimit-Remaining": "49",
        "X-RateLimit-Reset": f"{time.time() + 1:.3f}",
        "X-RateLimit-Reset-After": "1.000",
    }
    return web.Response(status=status, body=json.dumps(data).encode(), headers=headers)


def no_content() -> web.Response:
    return web.Response(status=204)


def error_response(error: ApiError) -> web.Response:
    body: Json = {"message": error.message, "code": error.code}
    if error.errors is not None:
        body["errors"] = error.errors
    return web.Response(
        status=error.status, body=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )


def rate_limited(route: str, retry_after: float, *, is_global: bool, cloudflare: bool) -> web.Response:
    """A 429 as Discord sends it (JSON, with ``Via``), or Cloudflare's HTML ban page without ``Via``."""
    if cloudflare:
        return web.Response(status=429, text="<html>You are being rate limited</html>", content_type="text/html")
    scope = "global" if is_global else "user"
    headers = {
        "Content-Type": "application/json",
        "Retry-After": str(max(1, round(retry_after))),
        "X-RateLimit-Limit": "5",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": f"{time.time() + retry_after:.3f}",
        "X-RateLimit-Reset-After": f"{retry_after:.3f}",
        "X-RateLimit-Bucket": hashlib.md5(route.encode()).hexdigest(),
        "X-RateLimit-Scope": scope,
        "Via": "1.1 google",
    }
    if is_global:
        headers["X-RateLimit-Global"] = "true"
    body = {"message": "You are being rate limited.", "retry_after": retry_after, "global": is_global}
    return web.Response(status=429, body=json.dumps(body).encode(), headers=headers)
