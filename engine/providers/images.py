"""Images across the provider boundary: face photos as data URIs or uploads, outputs sniffed and bounded."""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from collections.abc import Callable

from PIL import Image

from engine.backend import OutputImage
from engine.errors import InvalidInputError, ProtocolError

MAX_OUTPUT_BYTES = 50 * 1024 * 1024
MAX_OUTPUT_PIXELS = 40_000_000

_MAGIC: tuple[tuple[str, Callable[[bytes], bool]], ...] = (
    ("image/jpeg", lambda b: b[:3] == b"\xff\xd8\xff"),
    ("image/png", lambda b: b[:8] == b"\x89PNG\r\n\x1a\n"),
    ("image/webp", lambda b: b[:4] == b"RIFF" and b[8:12] == b"WEBP"),
)


def sniff_image(data: bytes) -> str | None:
    """The content type of a JPEG, PNG or WEBP by its magic bytes, else None."""
    for content_type, matches in _MAGIC:
        if matches(data):
            return content_type
    return None


def face_content_type(face: bytes) -> str:
    """A face photo's content type; a photo that is not a JPEG, PNG or WEBP is the user's input problem."""
    content_type = sniff_image(face)
    if content_type is None:
        raise InvalidInputError("face photo is not a JPEG, PNG or WEBP image")
    return content_type


def data_uri(image: bytes) -> str:
    return f"data:{face_content_type(image)};base64,{base64.b64encode(image).decode('ascii')}"


def decode_data_uri(uri: str) -> bytes:
    header, sep, payload = uri.partition(",")
    if not sep or not header.startswith("data:"):
        raise ProtocolError("output data URI is malformed")
    if header.endswith(";base64"):
        return decode_base64(payload)
    raise ProtocolError("output data URI is not base64")


def decode_base64(text: str) -> bytes:
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("output is not valid base64") from None


def output_image(data: bytes, *, nsfw: bool = False) -> OutputImage:
    """Validate downloaded bytes as an image (magic bytes, pixel bound, complete data) and measure it."""
    content_type = sniff_image(data)
    if content_type is None:
        raise ProtocolError(f"output is not a JPEG, PNG or WEBP image ({len(data)} bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if width * height > MAX_OUTPUT_PIXELS:
                    raise ProtocolError(f"output image is too large ({width}x{height})")
                image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ProtocolError(f"output {content_type} is truncated or corrupt") from None
    return OutputImage(data=data, content_type=content_type, width=width, height=height, nsfw=nsfw)
