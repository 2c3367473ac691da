"""Face photos from users: sniffed by content, bounded in bytes, pixels and decoding memory, upright, re-encoded."""

from __future__ import annotations

import asyncio
import io
import struct
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from PIL import Image

from bot import messages
from bot.errors import UserError

MAX_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 50_000_000  # what a photo may claim at all, read from its header before anything is decoded
# Memory one decode may take, estimated from the header before decoding (the pixels kept, what the codec
# holds besides them, and the scaled copy): a small PNG can claim far more pixels than it is worth.
DECODE_BUDGET = 48 * 1024 * 1024
DECODES_AT_ONCE = 2  # photos decoded in parallel; more wait their turn, so several bombs cannot add up
MIN_SIDE = 256  # a face smaller than this cannot carry a likeness
MAX_SIDE = 2048  # larger photos are scaled down: no backend needs more, and uploads stay small
# A JPEG is decoded at the coarsest DCT scale (1/2, 1/4, 1/8) that keeps its long side at least this: faces
# are found at 640 px and encoded from crops of 512 px or less, so a stored long side of 1536-2048 px loses
# nothing a backend uses.
NEEDED_SIDE = 1536
MAX_ASPECT = 4.0  # longer and thinner than 4:1 leaves too few pixels across once scaled
ACCEPTED = ("JPEG", "PNG", "WEBP")
MAX_PHOTOS = 4  # photos of one face in a request or a saved identity

_ORIENTATION = 0x0112
_UPRIGHT = {  # EXIF orientation -> the turn that shows the photo as the camera saw it
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# Pillow keeps a pixel in 1, 2 or 4 bytes whatever the bands; WebP decoding holds three more frames' worth
# (libwebp's canvas, the decoded bytes and their copy), measured by benchmarks/intake.py.
_ONE_BYTE = {"1", "L", "P"}
_TWO_BYTES = {"I;16", "I;16B", "I;16L", "I;16N"}
_ALPHA = {"RGBA", "LA", "PA", "La", "RGBa"}
_WEBP_EXTRA_BYTES = 12
_RESIZE_BAND = 128  # output rows resampled at a time: the scaled copy never needs a full-height temporary
_DECODERS = ThreadPoolExecutor(DECODES_AT_ONCE, thread_name_prefix="photo-decode")
_DAMAGE = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError)


@dataclass(frozen=True)
class _Kind:
    name: str  # as users know it
    size: Callable[[bytes], tuple[int, int] | None] | None = None  # from the header; None: a kind refused


def _png_size(data: bytes) -> tuple[int, int] | None:
    if data[12:16] != b"IHDR" or len(data) < 24:
        return None
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        return int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(data[28:30], "little") & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    return None


_HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"mif1", b"msf1")
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """The frame size from the first start-of-frame marker, walking the segments before it."""
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            at += 2
            continue
        if marker in _SOF:
            if at + 9 > len(data):
                return None
            height, width = struct.unpack(">HH", data[at + 5 : at + 9])
            return int(width), int(height)
        at += 2 + int.from_bytes(data[at + 2 : at + 4], "big")
    return None


def _is_svg(data: bytes) -> bool:
    head = data[:4096].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith((b"<?xml", b"<svg", b"<!doctype svg")) and b"<svg" in head


_KINDS: tuple[tuple[Callable[[bytes], bool], _Kind], ...] = (
    (lambda b: b[:3] == b"\xff\xd8\xff", _Kind("JPEG", _jpeg_size)),
    (lambda b: b[:8] == b"\x89PNG\r\n\x1a\n", _Kind("PNG", _png_size)),
    (lambda b: b[:4] == b"RIFF" and b[8:12] == b"WEBP", _Kind("WebP", _webp_size)),
    (lambda b: b[:6] in (b"GIF87a", b"GIF89a"), _Kind("GIF")),
    (lambda b: b[:4] in (b"II*\0", b"MM\0*"), _Kind("TIFF")),
    (lambda b: b[:2] == b"BM", _Kind("BMP")),
    (lambda b: b[4:8] == b"ftyp" and b[8:12] in (b"avif", b"avis"), _Kind("AVIF")),
    (lambda b: b[4:8] == b"ftyp" and b[8:12] in _HEIF_BRANDS, _Kind("HEIC")),
    (lambda b: b[:5] == b"%PDF-", _Kind("PDF")),
    (_is_svg, _Kind("SVG")),
)


def normalize_photo(data: bytes) -> bytes:
    """A clean JPEG of the photo, upright, its long side at most ``MAX_SIDE``; raises UserError saying what
    is wrong with it. Whatever the header gives away is refused before a single pixel is decoded."""
    kind, claimed = _sniffed(data)
    photo = _decoded(data, kind, claimed)
    orientation = _orientation(photo.info.get("exif"))
    # Each step replaces the one before, so the full-size decode is freed as soon as the scaled copy exists.
    photo = _resamplable(photo)
    photo = _scaled(photo, _fitted(photo.size))
    if orientation in _UPRIGHT:
        photo = photo.transpose(_UPRIGHT[orientation])
    photo = _as_rgb(photo)
    out = io.BytesIO()
    photo.save(out, format="JPEG", quality=92)
    return out.getvalue()


async def normalized(data: bytes) -> bytes:
    """``normalize_photo`` off the event loop, at most ``DECODES_AT_ONCE`` at a time in the process."""
    return await asyncio.get_running_loop().run_in_executor(_DECODERS, normalize_photo, data)


def _sniffed(data: bytes) -> tuple[_Kind, tuple[int, int]]:
    """The file's kind and the size its header claims, refusing what is no accepted photo."""
    if not data:
        raise UserError(messages.PHOTO_EMPTY)
    if len(data) > MAX_BYTES:
        raise UserError(messages.PHOTO_TOO_LARGE.format(mb=MAX_BYTES // (1024 * 1024)))
    kind = next((kind for matches, kind in _KINDS if matches(data)), None)
    if kind is None:
        raise UserError(messages.PHOTO_NOT_IMAGE)
    if kind.size is None:
        raise UserError(messages.photo_kind_refused(kind.name))
    claimed = kind.size(data)
    if claimed is None:
        raise UserError(messages.PHOTO_DAMAGED)
    _check_size(*claimed)
    return kind, claimed


def _decoded(data: bytes, kind: _Kind, claimed: tuple[int, int]) -> Image.Image:
    """The photo's pixels, a JPEG at a reduced DCT scale, once its decoding is known to fit the budget."""
    try:
        image = Image.open(io.BytesIO(data), formats=ACCEPTED)
    except _DAMAGE:  # UnidentifiedImageError is an OSError: the header is cut short or inconsistent
        raise UserError(messages.PHOTO_DAMAGED) from None
    claimed = image.size  # Pillow's reading wins where a header holds more than one size
    _check_size(*claimed)
    if image.format in ("PNG", "WEBP") and getattr(image, "is_animated", False):
        raise UserError(messages.PHOTO_ANIMATED)
    if image.format in ("JPEG", "MPO"):  # an MPO is a JPEG with more views after it: the first is the photo
        scale = _jpeg_scale(image, claimed)
        if scale is None:
            raise UserError(messages.photo_too_big_to_open(kind.name, *claimed))
        if scale > 1:
            image.draft(None, (claimed[0] // scale, claimed[1] // scale))
    elif _decode_cost(image, claimed, image.size) > DECODE_BUDGET:
        raise UserError(messages.photo_too_big_to_open(kind.name, *claimed))
    try:
        image.load()
    except _DAMAGE:
        raise UserError(messages.PHOTO_DAMAGED) from None
    return image


def _jpeg_scale(image: Image.Image, claimed: tuple[int, int]) -> int | None:
    """The DCT scale (1, 2, 4 or 8) to decode at: the coarsest that keeps ``NEEDED_SIDE``, or a coarser one
    when that would not fit the budget; None when none does."""
    long_side = max(claimed)
    fine = next((s for s in (8, 4, 2) if long_side // s >= NEEDED_SIDE), 1)
    for scale in (s for s in (1, 2, 4, 8) if s >= fine):
        decoded = ((claimed[0] + scale - 1) // scale, (claimed[1] + scale - 1) // scale)
        if _decode_cost(image, claimed, decoded) <= DECODE_BUDGET:
            return scale
    return None


def _check_size(width: int, height: int) -> None:
    if width <= 0 or height <= 0:
        raise UserError(messages.PHOTO_DAMAGED)
    if width * height > MAX_PIXELS:
        raise UserError(messages.photo_too_many_pixels(width, height, MAX_PIXELS // 1_000_000))
    if min(width, height) < MIN_SIDE:
        raise UserError(messages.PHOTO_TOO_SMALL.format(side=MIN_SIDE, w=width, h=height))
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise UserError(messages.photo_too_narrow(width, height, int(MAX_ASPECT)))


def _fitted(size: tuple[int, int], side: int = MAX_SIDE) -> tuple[int, int]:
    """The size with the long side at most ``side``, the shape kept."""
    width, height = size
    if max(width, height) <= side:
        return size
    factor = side / max(width, height)
    return max(1, round(width * factor)), max(1, round(height * factor))


def _bytes_per_pixel(mode: str) -> int:
    return 1 if mode in _ONE_BYTE else 2 if mode in _TWO_BYTES else 4


def _needs_flattening(image: Image.Image) -> bool:
    return image.mode in _ALPHA or "transparency" in image.info


def _decode_cost(image: Image.Image, claimed: tuple[int, int], decoded: tuple[int, int]) -> int:
    """Bytes that decoding at ``decoded`` size and scaling will hold at the peak, from the header alone."""
    pixels = decoded[0] * decoded[1]
    cost = pixels * _bytes_per_pixel(image.mode)
    if image.format in ("JPEG", "MPO") and image.info.get("progressive"):
        # A progressive scan keeps every DCT coefficient (2 bytes) of every component, at full size.
        layers = getattr(image, "layer", None) or [("", 1, 1, 0)] * len(image.getbands())
        most = max(h * v for _id, h, v, _q in layers) or 1
        cost += claimed[0] * claimed[1] * 2 * sum(h * v for _id, h, v, _q in layers) // most
    elif image.format == "WEBP":
        cost += pixels * _WEBP_EXTRA_BYTES
    if _needs_flattening(image):  # an RGBA copy, its alpha band and the RGB result, at full size
        cost += pixels * (5 if image.mode == "RGBA" else 9)
    elif image.mode in ("P", "1"):
        cost += pixels * 4
    fitted = _fitted(decoded)
    if fitted != decoded:  # the result, and one band of rows resampled across
        rows = _RESIZE_BAND * decoded[1] // fitted[1] + 8
        cost += fitted[0] * fitted[1] * 4 + fitted[0] * rows * 4
    return cost


def _resamplable(image: Image.Image) -> Image.Image:
    """A mode Pillow resamples smoothly: palettes and transparency made RGB (on white) first, since Pillow
    resamples palettes by nearest neighbour and converts RGBA for every call."""
    if _needs_flattening(image):
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, "white")
        flat.paste(rgba, mask=rgba.getchannel("A"))
        flat.info["exif"] = image.info.get("exif")
        return flat
    if image.mode in ("P", "1"):
        return image.convert("RGB")
    return image


def _scaled(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``image`` resampled to ``size`` (Lanczos) a band of rows at a time, so the only large buffers are the
    decoded photo and the result; ``image`` itself when it has that size already."""
    if image.size == size:
        return image
    out = Image.new(image.mode, size)
    scale = image.height / size[1]
    for top in range(0, size[1], _RESIZE_BAND):
        bottom = min(size[1], top + _RESIZE_BAND)
        box = (0.0, top * scale, float(image.width), min(float(image.height), bottom * scale))
        out.paste(image.resize((size[0], bottom - top), Image.Resampling.LANCZOS, box=box), (0, top))
    return out


def _orientation(exif: object) -> int:
    """The EXIF orientation (1-8) read straight from the TIFF structure; 1 when absent or unreadable, so a
    damaged EXIF block never costs the photo."""
    if not isinstance(exif, bytes):
        return 1
    tiff = exif[6:] if exif.startswith(b"Exif\0\0") else exif
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return 1
    (first,) = struct.unpack(order + "I", tiff[4:8])
    if first + 2 > len(tiff):
        return 1
    (count,) = struct.unpack(order + "H", tiff[first : first + 2])
    for index in range(min(count, 512)):
        at = first + 2 + 12 * index
        if at + 12 > len(tiff):
            return 1
        tag, kind, _count = struct.unpack(order + "HHI", tiff[at : at + 8])
        if tag == _ORIENTATION:
            if kind != 3:  # SHORT
                return 1
            (value,) = struct.unpack(order + "H", tiff[at + 8 : at + 10])
            return value if 1 <= value <= 8 else 1
    return 1


def _as_rgb(image: Image.Image) -> Image.Image:
    """Plain RGB: 16-bit grey scaled to 8 bits (Pillow's own conversion clips at 255, which turns a 16-bit
    grey photo white), CMYK and grey converted."""
    if image.mode in _TWO_BYTES or image.mode == "I":
        image = image.convert("I").point(lambda value: value * (1 / 256)).convert("L")
    return image if image.mode == "RGB" else image.convert("RGB")
