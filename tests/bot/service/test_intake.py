"""Photo intake: sniffed by content, bounded in bytes, pixels and decoding memory, turned upright, re-encoded."""

from __future__ import annotations

import asyncio
import io
import struct
import threading
import time
import zlib
from typing import Any

import pytest
from PIL import Image, ImageChops, ImageOps, ImageStat

from bot import intake, messages
from bot.errors import UserError
from bot.intake import DECODES_AT_ONCE, MAX_BYTES, MAX_PIXELS, MAX_SIDE, MIN_SIDE, normalize_photo, normalized

ORIENTATION = 0x0112
SKIN = (200, 150, 120)


def encoded(
    size: tuple[int, int], fmt: str, mode: str = "RGB", orientation: int | None = None, **options: object
) -> bytes:
    image = Image.new(mode, size, (*SKIN, 255)[: len(mode)])
    # A marker in one corner, to see which way up the result is.
    image.paste((0, 0, 255, 255)[: len(mode)], (0, 0, 40, 40))
    out = io.BytesIO()
    if orientation is not None:
        exif = Image.Exif()
        exif[ORIENTATION] = orientation
        options["exif"] = exif
    image.save(out, format=fmt, **options)
    return out.getvalue()


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims a size without the pixels to fill it (what a decompression bomb looks like up front)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def refusal(data: bytes) -> str:
    with pytest.raises(UserError) as refused:
        normalize_photo(data)
    return refused.value.message


def animated(fmt: str) -> bytes:
    out = io.BytesIO()
    first, second = Image.new("RGB", (400, 300), "tan"), Image.new("RGB", (400, 300), "navy")
    first.save(out, format=fmt, save_all=True, append_images=[second])
    return out.getvalue()


@pytest.mark.parametrize(("fmt", "mode"), [("JPEG", "RGB"), ("PNG", "RGBA"), ("WEBP", "RGB"), ("PNG", "L")])
def test_accepted_formats_come_out_as_plain_jpeg(fmt: str, mode: str) -> None:
    out = opened(normalize_photo(encoded((400, 300), fmt, mode)))
    assert (out.format, out.mode, out.size) == ("JPEG", "RGB", (400, 300))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"just some text\n", messages.PHOTO_NOT_IMAGE),
        (b"<!DOCTYPE html><html><body><img src='data:image/png;base64,iVBOR'></body></html>", messages.PHOTO_NOT_IMAGE),
        (b"", messages.PHOTO_EMPTY),
        (encoded((400, 300), "GIF", "L"), messages.photo_kind_refused("GIF")),
        (animated("GIF"), messages.photo_kind_refused("GIF")),
        (animated("TIFF"), messages.photo_kind_refused("TIFF")),
        (encoded((400, 300), "BMP"), messages.photo_kind_refused("BMP")),
        (
            b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="400"/>',
            messages.photo_kind_refused("SVG"),
        ),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", messages.photo_kind_refused("HEIC")),
        (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1", messages.photo_kind_refused("AVIF")),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", messages.photo_kind_refused("PDF")),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 10, messages.PHOTO_DAMAGED),
    ],
    ids=["text", "html", "empty", "gif", "animated-gif", "tiff", "bmp", "svg", "heic", "avif", "pdf", "png-signature"],
)
def test_what_is_not_an_accepted_photo_is_refused_by_its_content_saying_what_it_is(data: bytes, message: str) -> None:
    assert refusal(data) == message


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_animations_are_refused_rather_than_cut_to_one_frame(fmt: str) -> None:
    assert refusal(animated(fmt)) == messages.PHOTO_ANIMATED


def test_a_camera_mpo_is_a_jpeg_whose_first_view_is_the_photo() -> None:
    out = io.BytesIO()
    Image.new("RGB", (400, 300), SKIN).save(
        out, format="MPO", save_all=True, append_images=[Image.new("RGB", (400, 300))]
    )
    photo = opened(normalize_photo(out.getvalue()))
    assert photo.size == (400, 300)
    assert all(abs(a - b) < 6 for a, b in zip(photo.getpixel((200, 150)), SKIN, strict=True))  # type: ignore[arg-type]


def test_too_many_bytes_are_refused_before_decoding() -> None:
    assert refusal(b"\xff\xd8" + bytes(MAX_BYTES)) == messages.PHOTO_TOO_LARGE.format(mb=MAX_BYTES // (1024 * 1024))


@pytest.mark.parametrize("size", [(30_000, 30_000), (8_000, 7_000)], ids=["bomb", "over-the-cap"])
def test_too_many_pixels_are_refused_without_decoding_them(size: tuple[int, int]) -> None:
    assert refusal(png_header_only(*size)) == messages.photo_too_many_pixels(*size, MAX_PIXELS // 1_000_000)


@pytest.mark.parametrize(
    ("size", "kind"), [((7071, 7071), "PNG"), ((4000, 3000), "PNG")], ids=["50-megapixels", "12-megapixels"]
)
def test_a_png_that_would_take_too_much_memory_to_decode_is_refused_from_its_header(
    size: tuple[int, int], kind: str
) -> None:
    # The pixel data here is not there at all: a decode would call the file damaged. Refused by its header
    # alone, it never is decoded: the memory a 50-megapixel PNG needs (about 200 MiB) is never taken.
    assert refusal(png_header_only(*size)) == messages.photo_too_big_to_open(kind, *size)


def test_a_webp_is_held_to_what_decoding_it_costs() -> None:
    big = encoded((2600, 1950), "WEBP")
    assert refusal(big) == messages.photo_too_big_to_open("WebP", 2600, 1950)
    assert opened(normalize_photo(encoded((1600, 1200), "WEBP"))).size == (1600, 1200)


def test_a_big_jpeg_is_decoded_at_a_reduced_scale() -> None:
    # A 12-megapixel camera photo is decoded at half its size by libjpeg's DCT scaling: a quarter of the
    # memory, and still more pixels than any backend uses.
    out = opened(normalize_photo(encoded((4000, 3000), "JPEG")))
    assert out.size == (2000, 1500)
    out = opened(normalize_photo(encoded((8000, 6000), "JPEG")))
    assert out.size == (2000, 1500)


def test_a_jpeg_too_big_at_full_scale_is_decoded_coarser_rather_than_refused() -> None:
    out = opened(normalize_photo(encoded((3000, 3000), "JPEG")))
    assert out.size == (1500, 1500)


def test_a_progressive_jpeg_counts_the_coefficients_libjpeg_keeps() -> None:
    size = (6000, 4500)
    assert refusal(encoded(size, "JPEG", progressive=True)) == messages.photo_too_big_to_open("JPEG", *size)
    assert opened(normalize_photo(encoded((4000, 3000), "JPEG", progressive=True))).size == (2000, 1500)


def test_a_cut_off_file_is_called_damaged() -> None:
    whole = encoded((400, 300), "JPEG")
    assert refusal(whole[: len(whole) // 3]) == messages.PHOTO_DAMAGED
    png = encoded((400, 300), "PNG")
    assert refusal(png[: len(png) - 30]) == messages.PHOTO_DAMAGED


def test_a_png_with_a_broken_checksum_is_called_damaged() -> None:
    png = bytearray(encoded((400, 300), "PNG"))
    png[29] ^= 0xFF  # inside IHDR's checksum
    assert refusal(bytes(png)) == messages.PHOTO_DAMAGED


def test_a_face_too_small_to_carry_a_likeness_is_refused() -> None:
    assert refusal(encoded((MIN_SIDE - 1, 600), "PNG")) == messages.PHOTO_TOO_SMALL.format(
        side=MIN_SIDE, w=MIN_SIDE - 1, h=600
    )


def test_a_strip_too_long_and_thin_is_refused() -> None:
    assert refusal(encoded((4000, 300), "JPEG")) == messages.photo_too_narrow(4000, 300, 4)


def test_exif_orientation_is_applied_and_the_exif_dropped() -> None:
    # Orientation 6: the camera was turned; viewers rotate the stored landscape 90° clockwise.
    out = opened(normalize_photo(encoded((400, 300), "JPEG", orientation=6)))
    assert out.size == (300, 400)
    assert ORIENTATION not in out.getexif()
    # The marker stored top-left ends up top-right once upright.
    red, _green, blue = out.getpixel((out.width - 10, 10))  # type: ignore[misc]
    assert blue > 200 and red < 60


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_every_orientation_turns_out_as_pillow_shows_it(fmt: str, orientation: int) -> None:
    data = encoded((400, 300), fmt, orientation=orientation)
    expected = ImageOps.exif_transpose(opened(data)).convert("RGB")
    out = opened(normalize_photo(data))
    assert out.size == expected.size
    assert max(ImageStat.Stat(ImageChops.difference(out, expected)).mean) < 2  # JPEG's own loss, no more


@pytest.mark.parametrize(
    "exif",
    [
        b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff\x01\x12\x00\x03",  # claims 65535 entries, holds one
        b"Exif\x00\x00garbage, not a TIFF header at all",
        b"Exif\x00\x00II*\x00\xff\xff\xff\x7f",  # first directory far past the end
        b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x01\x00\x12\x01\x03\x00\x01\x00\x00\x00\x63\x00\x00\x00",  # 99
    ],
    ids=["short-directory", "not-tiff", "offset-past-end", "orientation-99"],
)
# Pillow reads the resolution from EXIF as it opens a JPEG, and warns (no more) when the block is damaged.
@pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")
def test_a_damaged_exif_block_leaves_the_photo_as_stored(exif: bytes) -> None:
    out = io.BytesIO()
    Image.new("RGB", (400, 300), SKIN).save(out, format="JPEG", exif=exif)
    assert opened(normalize_photo(out.getvalue())).size == (400, 300)


def test_sixteen_bit_grey_keeps_its_tones() -> None:
    out = io.BytesIO()
    grey = Image.new("I;16", (400, 300), 40000)  # 61% grey, stored in 16 bits
    grey.paste(Image.new("I;16", (200, 300), 10000), (0, 0))
    grey.save(out, format="PNG")
    assert opened(out.getvalue()).mode == "I;16"
    photo = opened(normalize_photo(out.getvalue()))
    dark, light = photo.getpixel((100, 150)), photo.getpixel((300, 150))
    assert all(abs(value - 10000 // 256) <= 2 for value in dark)  # type: ignore[union-attr]
    assert all(abs(value - 40000 // 256) <= 2 for value in light)  # type: ignore[union-attr]


def test_sixteen_bit_grey_is_scaled_down_with_its_tones_too() -> None:
    out = io.BytesIO()
    Image.new("I;16", (3000, 2000), 30000).save(out, format="PNG")
    photo = opened(normalize_photo(out.getvalue()))
    assert photo.size == (MAX_SIDE, 1365)
    assert all(abs(value - 30000 // 256) <= 2 for value in photo.getpixel((1000, 600)))  # type: ignore[union-attr]


def test_cmyk_jpegs_come_out_in_their_colours() -> None:
    out = io.BytesIO()
    Image.new("CMYK", (400, 300), (0, 255, 255, 0)).save(out, format="JPEG")  # pure red in print inks
    red, green, blue = opened(normalize_photo(out.getvalue())).getpixel((200, 150))  # type: ignore[misc]
    assert red > 240 and green < 20 and blue < 20


def test_a_palette_with_transparency_is_laid_on_white() -> None:
    image = Image.new("P", (400, 300), 0)
    image.putpalette([0, 0, 0, *SKIN] + [0] * 762)
    image.paste(1, (200, 0, 400, 300))
    out = io.BytesIO()
    image.save(out, format="PNG", transparency=0)  # the black half is transparent
    photo = opened(normalize_photo(out.getvalue()))
    assert all(value > 245 for value in photo.getpixel((100, 150)))  # type: ignore[union-attr]
    assert all(abs(a - b) < 6 for a, b in zip(photo.getpixel((300, 150)), SKIN, strict=True))  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_transparent_pixels_become_white_not_black(mode: str) -> None:
    image = Image.new(mode, (400, 300), (0,) * len(mode))  # fully transparent black
    out = io.BytesIO()
    image.save(out, format="PNG")
    assert all(value > 245 for value in opened(normalize_photo(out.getvalue())).getpixel((200, 150)))  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "payload",
    [b"<html><script>alert(1)</script></html>", b"PK\x03\x04" + b"\0" * 26 + b"evil.sh"],
    ids=["html", "zip"],
)
def test_a_polyglot_keeps_only_its_picture(payload: bytes) -> None:
    data = encoded((400, 300), "JPEG") + payload
    out = normalize_photo(data)
    assert payload not in out and opened(out).size == (400, 300)


def test_large_photos_are_scaled_down_keeping_their_shape() -> None:
    out = opened(normalize_photo(encoded((3000, 2500), "PNG")))
    assert out.size == (MAX_SIDE, round(2500 * MAX_SIDE / 3000))


def test_scaling_a_band_at_a_time_matches_scaling_at_once() -> None:
    image = Image.linear_gradient("L").resize((1000, 2600)).convert("RGB")
    image.paste((255, 0, 0), (400, 1000, 600, 1400))
    banded = intake._scaled(image, (788, MAX_SIDE))
    whole = image.resize((788, MAX_SIDE), Image.Resampling.LANCZOS)
    extrema: Any = ImageChops.difference(banded, whole).getextrema()
    assert max(high for _low, high in extrema) <= 2


async def test_normalizing_off_the_event_loop_gives_the_same_bytes() -> None:
    photo = encoded((400, 300), "JPEG")
    assert await normalized(photo) == normalize_photo(photo)


async def test_only_a_few_photos_are_decoded_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    lock, running, most = threading.Lock(), [0], [0]

    def slow_decode(data: bytes) -> bytes:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return data

    monkeypatch.setattr(intake, "normalize_photo", slow_decode)
    assert await asyncio.gather(*(normalized(bytes([n])) for n in range(4 * DECODES_AT_ONCE))) == [
        bytes([n]) for n in range(4 * DECODES_AT_ONCE)
    ]
    assert most[0] == DECODES_AT_ONCE
