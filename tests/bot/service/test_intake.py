"""Photo intake: sniffed by content, bounded in bytes and pixels, turned upright by EXIF, re-encoded as JPEG."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from bot import messages
from bot.errors import UserError
from bot.intake import MAX_BYTES, MAX_SIDE, MIN_SIDE, normalize_photo, normalized

ORIENTATION = 0x0112


def encoded(size: tuple[int, int], fmt: str, mode: str = "RGB", orientation: int | None = None) -> bytes:
    image = Image.new(mode, size, (200, 150, 120, 255)[: len(mode)])
    # A marker in one corner, to see which way up the result is.
    image.paste((0, 0, 255, 255)[: len(mode)], (0, 0, 40, 40))
    out = io.BytesIO()
    if orientation is None:
        image.save(out, format=fmt)
    else:
        exif = Image.Exif()
        exif[ORIENTATION] = orientation
        image.save(out, format=fmt, exif=exif)
    return out.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims a size without the pixels to fill it (what a decompression bomb looks like up front)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.mark.parametrize(("fmt", "mode"), [("JPEG", "RGB"), ("PNG", "RGBA"), ("WEBP", "RGB")])
def test_accepted_formats_come_out_as_plain_jpeg(fmt: str, mode: str) -> None:
    out = opened(normalize_photo(encoded((400, 300), fmt, mode)))
    assert (out.format, out.mode, out.size) == ("JPEG", "RGB", (400, 300))


@pytest.mark.parametrize(
    "data",
    [b"just some text\n", b"", encoded((400, 300), "GIF", "L"), b"\x89PNG\r\n\x1a\n" + b"\0" * 10],
    ids=["text", "empty", "gif", "png-signature-only"],
)
def test_what_is_not_an_accepted_image_is_refused_by_its_content(data: bytes) -> None:
    with pytest.raises(UserError) as refused:
        normalize_photo(data)
    assert refused.value.message == messages.PHOTO_NOT_IMAGE


def test_too_many_bytes_are_refused_before_decoding() -> None:
    with pytest.raises(UserError) as refused:
        normalize_photo(b"\xff\xd8" + bytes(MAX_BYTES))
    assert refused.value.message == messages.PHOTO_TOO_LARGE.format(mb=MAX_BYTES // (1024 * 1024))


@pytest.mark.parametrize("size", [(30_000, 30_000), (8_000, 7_000)], ids=["bomb", "over-the-cap"])
def test_too_many_pixels_are_refused_without_decoding_them(size: tuple[int, int]) -> None:
    with pytest.raises(UserError) as refused:
        normalize_photo(png_header_only(*size))
    assert refused.value.message == messages.PHOTO_TOO_MANY_PIXELS


def test_a_cut_off_file_is_called_damaged() -> None:
    whole = encoded((400, 300), "JPEG")
    with pytest.raises(UserError) as refused:
        normalize_photo(whole[: len(whole) // 3])
    assert refused.value.message == messages.PHOTO_DAMAGED


def test_a_face_too_small_to_carry_a_likeness_is_refused() -> None:
    with pytest.raises(UserError) as refused:
        normalize_photo(encoded((MIN_SIDE - 1, 600), "PNG"))
    assert refused.value.message == messages.PHOTO_TOO_SMALL.format(side=MIN_SIDE, w=MIN_SIDE - 1, h=600)


def test_exif_orientation_is_applied_and_the_exif_dropped() -> None:
    # Orientation 6: the camera was turned; viewers rotate the stored landscape 90° clockwise.
    out = opened(normalize_photo(encoded((400, 300), "JPEG", orientation=6)))
    assert out.size == (300, 400)
    assert ORIENTATION not in out.getexif()
    # The marker stored top-left ends up top-right once upright.
    red, _green, blue = out.getpixel((out.width - 10, 10))  # type: ignore[misc]
    assert blue > 200 and red < 60


def test_large_photos_are_scaled_down_keeping_their_shape() -> None:
    out = opened(normalize_photo(encoded((3000, 2500), "PNG")))
    assert out.size == (MAX_SIDE, round(2500 * MAX_SIDE / 3000))


async def test_normalizing_off_the_event_loop_gives_the_same_bytes() -> None:
    photo = encoded((400, 300), "JPEG")
    assert await normalized(photo) == normalize_photo(photo)
