"""Face photos from users: sniffed by content, bounded in bytes and pixels, EXIF-rotated, re-encoded."""

from __future__ import annotations

import asyncio
import io
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

from bot import messages
from bot.errors import UserError

MAX_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 50_000_000  # above this, decoding alone could exhaust memory (decompression bombs)
MIN_SIDE = 256  # a face smaller than this cannot carry a likeness
MAX_SIDE = 2048  # larger photos are scaled down: no backend needs more, and uploads stay small
ACCEPTED = ("JPEG", "PNG", "WEBP")
MAX_PHOTOS = 4  # photos of one face in a request or a saved identity


def normalize_photo(data: bytes) -> bytes:
    """A clean JPEG of the photo, upright; raises UserError saying what is wrong with it."""
    if len(data) > MAX_BYTES:
        raise UserError(messages.PHOTO_TOO_LARGE.format(mb=MAX_BYTES // (1024 * 1024)))
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=ACCEPTED)
        except UnidentifiedImageError:
            raise UserError(messages.PHOTO_NOT_IMAGE) from None
        except (Image.DecompressionBombWarning, Image.DecompressionBombError):
            raise UserError(messages.PHOTO_TOO_MANY_PIXELS) from None
        except (OSError, SyntaxError, ValueError):  # a recognised format whose header is cut or corrupt
            raise UserError(messages.PHOTO_DAMAGED) from None
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise UserError(messages.PHOTO_TOO_MANY_PIXELS)
        try:
            image.load()
        except (OSError, SyntaxError, ValueError):
            raise UserError(messages.PHOTO_DAMAGED) from None
    upright = ImageOps.exif_transpose(image)
    if min(upright.size) < MIN_SIDE:
        raise UserError(messages.PHOTO_TOO_SMALL.format(side=MIN_SIDE, w=upright.width, h=upright.height))
    if max(upright.size) > MAX_SIDE:
        upright.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    upright.convert("RGB").save(out, format="JPEG", quality=92)
    return out.getvalue()


async def normalized(data: bytes) -> bytes:
    """``normalize_photo`` off the event loop: decoding and re-encoding takes milliseconds of CPU."""
    return await asyncio.to_thread(normalize_photo, data)
