"""Results made to fit Discord's upload limit: re-encoded as smaller JPEGs, or left out with a note."""

from __future__ import annotations

import asyncio
import io
from dataclasses import replace

import discord
from PIL import Image

from bot import messages
from bot.service.replies import Reply, ReplyImage

DEFAULT_LIMIT = 10 * 1024 * 1024  # a file's limit in servers without boosts and in DMs
TOO_LARGE = 40005  # "Request entity too large": a file over the limit (HTTP 413)
QUALITIES = (90, 80, 65, 50)
SHRINK = 0.75  # each step down scales the sides by this
MIN_SIDE = 384  # smaller than this a result is not worth posting: a note says it was too large instead


def too_large(error: discord.HTTPException) -> bool:
    return error.status == 413 or error.code == TOO_LARGE


async def within(reply: Reply, limit: int) -> Reply | None:
    """The reply with every image at most ``limit`` bytes (those over it re-encoded smaller); None if one
    cannot be made that small and still be worth seeing."""
    if all(len(image.data) <= limit for image in reply.images):
        return reply
    fitted = []
    for image in reply.images:
        smaller = image if len(image.data) <= limit else await asyncio.to_thread(shrink, image, limit)
        if smaller is None:
            return None
        fitted.append(smaller)
    return replace(reply, images=tuple(fitted))


def without_images(reply: Reply) -> Reply:
    """The reply as text and buttons only, saying why there is no image (no link to one either)."""
    return replace(reply, text=f"{messages.DISCORD_RESULT_TOO_LARGE}\n\n{reply.text}", images=())


def shrink(image: ReplyImage, limit: int) -> ReplyImage | None:
    """A JPEG of the image of at most ``limit`` bytes: lower quality first, then smaller sides."""
    try:
        with Image.open(io.BytesIO(image.data)) as opened:
            picture = _rgb(opened)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    width, height = picture.size
    scale = 1.0
    while min(width, height) * scale >= min(MIN_SIDE, width, height):
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        resized = picture if scale == 1.0 else picture.resize(size, Image.Resampling.LANCZOS)
        for quality in QUALITIES:
            out = io.BytesIO()
            resized.save(out, format="JPEG", quality=quality, optimize=True)
            if out.tell() <= limit:
                stem = image.filename.rsplit(".", 1)[0]
                return replace(
                    image,
                    data=out.getvalue(),
                    content_type="image/jpeg",
                    width=size[0],
                    height=size[1],
                    filename=f"{stem}.jpg",
                )
        scale *= SHRINK
    return None


def _rgb(picture: Image.Image) -> Image.Image:
    """JPEG holds no transparency: transparent parts go on white."""
    if picture.mode in ("RGBA", "LA", "P", "PA") or "transparency" in picture.info:
        rgba = picture.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return picture.convert("RGB")
