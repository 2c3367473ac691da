"""How Bot API requests arrive and answers leave: parameters, uploaded files, errors and the API's limits."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fakes.telegram.models import JSON

# Limits of the public Bot API (the same numbers as PTB's constants).
TEXT_LIMIT = 4096
CAPTION_LIMIT = 1024
CALLBACK_DATA_LIMIT = 64
CALLBACK_ANSWER_LIMIT = 200
DOWNLOAD_LIMIT = 20_000_000
PHOTO_UPLOAD_LIMIT = 10_000_000
UPLOAD_LIMIT = 50_000_000
PHOTO_SIDES_LIMIT = 10_000
PHOTO_RATIO_LIMIT = 20
# Bodies up to this size reach the handlers, so oversized uploads get Telegram's answer, not aiohttp's.
MAX_BODY = 64 * 1024 * 1024


class ApiError(Exception):
    def __init__(self, code: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.retry_after = retry_after


def bad(description: str) -> ApiError:
    return ApiError(400, f"Bad Request: {description}")


@dataclass(frozen=True)
class UploadedFile:
    data: bytes
    filename: str | None
    content_type: str | None


@dataclass(frozen=True)
class Reply:
    """A successful result that Telegram answers with a description too."""

    result: Any
    description: str


class Params:
    """Request parameters: form fields arrive as strings, with objects JSON-encoded, as PTB sends them."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values

    def raw(self, name: str) -> Any:
        return self.values.get(name)

    def text(self, name: str) -> str | None:
        value = self.values.get(name)
        if value is None:
            return None
        if isinstance(value, UploadedFile):
            raise bad(f"{name} must be a string")
        return value if isinstance(value, str) else str(value)

    def integer(self, name: str, default: int | None = None, *, required: bool = False) -> int | None:
        value = self.values.get(name)
        if value is None or value == "":
            if required:
                raise bad(f"{name} is empty")
            return default
        if isinstance(value, (bool, UploadedFile)):
            raise bad(f"invalid {name} specified")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise bad(f"invalid {name} specified") from None

    def number(self, name: str, default: float) -> float:
        value = self.values.get(name)
        if value is None or value == "":
            return default
        try:
            return float(value)
        except (TypeError, ValueError):
            raise bad(f"invalid {name} specified") from None

    def flag(self, name: str) -> bool:
        return self.values.get(name) in (True, 1, "true", "True", "1")

    def obj(self, name: str) -> Any:
        value = self.values.get(name)
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                raise bad(f"can't parse {name} JSON object") from None
        return value

    def summary(self) -> JSON:
        """The parameters with uploads reduced to their size, for the call log."""
        return {
            key: f"<{len(value.data)} bytes>" if isinstance(value, UploadedFile) else value
            for key, value in self.values.items()
        }


async def read_params(request: web.Request) -> Params:
    values: dict[str, Any] = dict(request.query)
    if request.method == "POST" and request.can_read_body:
        if request.content_type == "application/json":
            try:
                body = await request.json()
            except ValueError:
                raise bad("can't parse JSON request body") from None
            if not isinstance(body, dict):
                raise bad("request body must be a JSON object")
            values.update(body)
        else:
            form = await request.post()
            for key, value in form.items():
                if isinstance(value, web.FileField):
                    values[key] = UploadedFile(value.file.read(), value.filename, value.content_type)
                else:
                    values[key] = value
    return Params(values)


def error_response(error: ApiError) -> web.Response:
    body: JSON = {"ok": False, "error_code": error.code, "description": error.description}
    if error.retry_after is not None:
        body["parameters"] = {"retry_after": error.retry_after}
    return web.json_response(body, status=error.code)
