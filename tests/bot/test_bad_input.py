"""The bad-input corpus through the service: each broken or hostile input a chat user can send gets its own
message, and costs nothing: no charge, no job, no stored file, no render; the few that are fine are stored right.

The cases that need a chat platform's own events (edited messages, channel posts, forged buttons) are in
tests/bot/telegram/test_bad_input_chat.py.
"""

from __future__ import annotations

import functools
import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from bot import intake, messages
from bot.errors import UserError
from bot.intake import MAX_BYTES, MAX_PHOTOS, MAX_PIXELS, MIN_SIDE
from bot.service.imagine import ImagineInput
from bot.service.options import FLAGS, STRICT
from storage import jobs, quota, users
from storage import tables as t
from storage.db import Database
from storage.errors import QuotaRefused, RefusalReason
from tests.bot.service.conftest import ADMIN, ANN, WELCOME, ChatTarget, World
from tests.bot.service.conftest import world as world  # the service world, shared as a fixture

SKIN = (200, 150, 120)
NOW = 1_800_000_000.0


def photo(size: tuple[int, int] = (400, 480), fmt: str = "JPEG", mode: str = "RGB", **options: Any) -> bytes:
    image = Image.new(mode, size, (*SKIN, 255)[: len(mode)])
    image.paste((0, 0, 255, 255)[: len(mode)], (0, 0, 40, 40))  # a marker top-left, to see which way is up
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def frames(fmt: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (400, 300), "tan").save(
        out, format=fmt, save_all=True, append_images=[Image.new("RGB", (400, 300))]
    )
    return out.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width: int, height: int) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + idat + png_chunk(b"IEND", b"")


@functools.cache
def decompression_bomb() -> bytes:
    """A whole, valid 7071×7071 PNG of one colour: 156 KiB that decode to 200 MiB."""
    width = height = 7071
    row = b"\0" + b"\x80" * (width * 3)
    squeeze = zlib.compressobj(9)
    body = b"".join(squeeze.compress(row) for _ in range(height)) + squeeze.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", body) + png_chunk(b"IEND", b"")


def broken_crc() -> bytes:
    data = bytearray(photo(fmt="PNG"))
    data[29] ^= 0xFF
    return bytes(data)


@dataclass(frozen=True)
class Case:
    """One kind of bad input: what is sent, and what the user is told."""

    photos: Callable[[], tuple[bytes, ...]] = lambda: (photo(),)
    text: str = "a knight in armour"
    params: dict[str, Any] = field(default_factory=dict)
    message: str | Callable[[str], bool] = ""


def starts(prefix: str) -> Callable[[str], bool]:
    return lambda text: text.startswith(prefix)


CORPUS: dict[str, Case] = {
    # files
    "truncated": Case(lambda: (photo()[:700],), message=messages.PHOTO_DAMAGED),
    "zero-byte": Case(lambda: (b"",), message=messages.PHOTO_EMPTY),
    "non-image": Case(lambda: (b"hello, this is text\n",), message=messages.PHOTO_NOT_IMAGE),
    "svg": Case(
        lambda: (b'<svg xmlns="http://www.w3.org/2000/svg" width="400" height="480"/>',),
        message=messages.photo_kind_refused("SVG"),
    ),
    "html": Case(lambda: (b"<!doctype html><html><body>hi</body></html>",), message=messages.PHOTO_NOT_IMAGE),
    "html-polyglot": Case(lambda: (b"<html><!-- " + photo() + b" --></html>",), message=messages.PHOTO_NOT_IMAGE),
    "gif": Case(lambda: (photo(fmt="GIF", mode="L"),), message=messages.photo_kind_refused("GIF")),
    "animated-gif": Case(lambda: (frames("GIF"),), message=messages.photo_kind_refused("GIF")),
    "apng": Case(lambda: (frames("PNG"),), message=messages.PHOTO_ANIMATED),
    "animated-webp": Case(lambda: (frames("WEBP"),), message=messages.PHOTO_ANIMATED),
    "multi-frame-tiff": Case(lambda: (frames("TIFF"),), message=messages.photo_kind_refused("TIFF")),
    "bmp": Case(lambda: (photo(fmt="BMP"),), message=messages.photo_kind_refused("BMP")),
    "heic": Case(
        lambda: (b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + bytes(64),), message=messages.photo_kind_refused("HEIC")
    ),
    "pdf": Case(lambda: (b"%PDF-1.7\n" + bytes(64),), message=messages.photo_kind_refused("PDF")),
    "huge-dimensions": Case(
        lambda: (png_claiming(60_000, 60_000),),
        message=messages.photo_too_many_pixels(60_000, 60_000, MAX_PIXELS // 10**6),
    ),
    "decompression-bomb": Case(
        lambda: (decompression_bomb(),), message=messages.photo_too_big_to_open("PNG", 7071, 7071)
    ),
    "progressive-jpeg-bomb": Case(
        lambda: (photo((6000, 4500), progressive=True),), message=messages.photo_too_big_to_open("JPEG", 6000, 4500)
    ),
    "tiny": Case(lambda: (photo((120, 90)),), message=messages.PHOTO_TOO_SMALL.format(side=MIN_SIDE, w=120, h=90)),
    "long-and-thin": Case(lambda: (photo((2400, 300)),), message=messages.photo_too_narrow(2400, 300, 4)),
    "over-size-file": Case(
        lambda: (b"\xff\xd8\xff" + bytes(MAX_BYTES),), message=messages.PHOTO_TOO_LARGE.format(mb=MAX_BYTES // 2**20)
    ),
    "broken-checksum": Case(lambda: (broken_crc(),), message=messages.PHOTO_DAMAGED),
    "too-many-photos": Case(
        lambda: (photo(),) * (MAX_PHOTOS + 1), message=messages.TOO_MANY_PHOTOS.format(limit=MAX_PHOTOS)
    ),
    "bad-photo-after-good-ones": Case(lambda: (photo(), photo((500, 500)), b"junk"), message=messages.PHOTO_NOT_IMAGE),
    # prompts and options
    "empty-prompt": Case(text="   ", message=messages.EMPTY_PROMPT),
    "prompt-over-the-limit": Case(
        text="a" * (messages.MAX_PROMPT + 1), message=messages.PROMPT_TOO_LONG.format(limit=messages.MAX_PROMPT)
    ),
    "nan-option": Case(
        text="a knight --guidance nan",
        message=messages.BAD_OPTION.format(flag="--guidance", value="nan", expected="a finite number"),
    ),
    "inf-option": Case(
        text="a knight --iw -inf",
        message=messages.BAD_OPTION.format(flag="--iw", value="-inf", expected="a finite number"),
    ),
    "nan-structured-option": Case(
        params={"guidance": float("nan")},
        message=messages.BAD_OPTION.format(flag="guidance", value="nan", expected="a finite number"),
    ),
    "huge-option": Case(text="a knight --n 1000000", message=starts("No backend can take these settings:\n• number")),
    "huge-seed": Case(
        text="a knight --seed " + "9" * 40, message=starts("No backend can take these settings:\n• seed")
    ),
    "negative-option": Case(text="a knight --steps -5", message=starts("No backend can take these settings:\n• steps")),
    "not-a-number": Case(
        text="a knight --seed seven",
        message=messages.BAD_OPTION.format(flag="--seed", value="seven", expected="a whole number"),
    ),
    "unknown-option": Case(
        text="a knight --sharpness 11",
        message=messages.UNKNOWN_OPTION.format(flag="--sharpness", known=", ".join(sorted([*FLAGS, STRICT]))),
    ),
    "option-without-value": Case(text="a knight --seed", message=messages.MISSING_VALUE.format(flag="--seed")),
    "control-characters": Case(text="a knight\x00\x1b[2J", message=messages.hidden_characters("prompt", "U+0000")),
    "bidi-override": Case(text="a knight \u202etxet nedduh", message=messages.hidden_characters("prompt", "U+202E")),
    "mention": Case(text="a portrait of @everyone", message=messages.prompt_mentions("prompt", "@everyone")),
    "discord-mention": Case(
        text="a portrait of <@80351110224678912>", message=messages.prompt_mentions("prompt", "<@80351110224678912>")
    ),
    "mention-in-negative": Case(
        params={"negative_prompt": "<@&42>"}, message=messages.prompt_mentions("negative prompt", "<@&42>")
    ),
}


def job_ledger_rows(*, session: Connection) -> int:
    """Reservations, charges and refunds: ledger rows of any job (the welcome grant is none)."""
    found = select(func.count()).select_from(t.ledger).where(t.ledger.c.job_id.is_not(None))
    return int(session.execute(found).scalar_one())


async def assert_nothing_happened(world: World, event_id: str) -> None:
    assert await world.db.read(jobs.get, job_id=event_id) is None
    assert await world.db.read(job_ledger_rows) == 0
    user = await world.user(ANN)
    assert (user.credits, user.reserved, user.day_jobs) == (WELCOME, 0, 0)
    assert [path for path in world.blobs.root.rglob("*") if path.is_file()] == []
    assert world.backend.requests == []


@pytest.mark.parametrize("kind", list(CORPUS))
async def test_bad_input_is_refused_with_its_own_message_and_costs_nothing(world: World, kind: str) -> None:
    case = CORPUS[kind]
    await world.service.users.of(ANN)
    given = ImagineInput(
        event_id=f"bad-{kind}", text=case.text, reply_target=ChatTarget("c1"), photos=case.photos(), params=case.params
    )
    with pytest.raises(UserError) as refused:
        await world.service.imagine.submit(ANN, given)
    if callable(case.message):
        assert case.message(refused.value.message), refused.value.message
    else:
        assert refused.value.message == case.message
    await world.run_jobs()
    await assert_nothing_happened(world, given.event_id)


@pytest.mark.parametrize("kind", ["zero-byte", "decompression-bomb", "apng", "bad-photo-after-good-ones"])
async def test_a_face_saved_from_bad_photos_is_refused_the_same_way_and_stores_nothing(world: World, kind: str) -> None:
    case = CORPUS[kind]
    with pytest.raises(UserError) as refused:
        await world.service.faces.save(ANN, "me", case.photos())
    assert refused.value.message == case.message
    assert await world.service.faces.names(ANN) == []
    assert [path for path in world.blobs.root.rglob("*") if path.is_file()] == []


# --- refused before the photo is even decoded ---------------------------------------------------------


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Sizes of the photos intake decodes from here on."""
    seen: list[int] = []
    real = intake.normalize_photo

    def counted(data: bytes) -> bytes:
        seen.append(len(data))
        return real(data)

    monkeypatch.setattr(intake, "normalize_photo", counted)
    return seen


async def test_a_banned_user_is_refused_before_their_bomb_is_decoded(world: World, decodes: list[int]) -> None:
    await world.service.admin.ban(ADMIN, ANN.key, "spam")
    given = ImagineInput("e1", "a knight", ChatTarget("c1"), photos=(decompression_bomb(),))
    with pytest.raises(UserError) as refused:
        await world.service.imagine.submit(ANN, given)
    assert refused.value.message == messages.refusal(QuotaRefused(RefusalReason.BANNED))
    assert decodes == []
    assert [path for path in world.blobs.root.rglob("*") if path.is_file()] == []
    with pytest.raises(UserError) as face:
        await world.service.faces.save(ANN, "me", (photo(),))
    assert face.value.message == messages.refusal(QuotaRefused(RefusalReason.BANNED)) and decodes == []


async def test_without_credits_the_photo_is_neither_decoded_nor_stored(world: World, decodes: list[int]) -> None:
    await world.service.admin.grant(ADMIN, ANN.key, str(-WELCOME))
    with pytest.raises(UserError) as refused:
        await world.service.imagine.submit(ANN, ImagineInput("e1", "a knight", ChatTarget("c1"), photos=(photo(),)))
    assert refused.value.message.startswith("Not enough credits")
    assert decodes == [] and [path for path in world.blobs.root.rglob("*") if path.is_file()] == []


async def test_over_the_daily_limit_the_photo_is_neither_decoded_nor_stored(world: World, decodes: list[int]) -> None:
    await world.service.admin.limit(ADMIN, ANN.key, "1")
    await world.service.imagine.submit(ANN, ImagineInput("e1", "a knight", ChatTarget("c1"), photos=(photo(),)))
    assert len(decodes) == 1
    stored = {path for path in world.blobs.root.rglob("*") if path.is_file()}
    with pytest.raises(UserError) as refused:
        given = ImagineInput("e2", "a knight", ChatTarget("c1"), photos=(photo((500, 500)),))
        await world.service.imagine.submit(ANN, given)
    assert "today's limit of 1" in refused.value.message
    assert len(decodes) == 1 and {path for path in world.blobs.root.rglob("*") if path.is_file()} == stored


async def test_settings_no_backend_takes_refuse_before_the_photo_is_decoded(world: World, decodes: list[int]) -> None:
    with pytest.raises(UserError) as refused:
        given = ImagineInput("e1", "a knight --steps 500", ChatTarget("c1"), photos=(photo(),))
        await world.service.imagine.submit(ANN, given)
    assert refused.value.message.startswith("No backend can take these settings")
    assert decodes == [] and [path for path in world.blobs.root.rglob("*") if path.is_file()] == []


# --- accepted, and stored as the user meant it ---------------------------------------------------------


def sixteen_bit_grey() -> bytes:
    out = io.BytesIO()
    Image.new("I;16", (400, 480), 40000).save(out, format="PNG")
    return out.getvalue()


def exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown turned 90° clockwise
    return photo((480, 400), exif=exif)


def cmyk() -> bytes:
    out = io.BytesIO()
    Image.new("CMYK", (400, 480), (0, 255, 255, 0)).save(out, format="JPEG")
    return out.getvalue()


def palette_with_alpha() -> bytes:
    image = Image.new("P", (400, 480), 0)
    image.putpalette([0, 0, 0, *SKIN] + [0] * 762)
    image.paste(1, (200, 0, 400, 480))
    out = io.BytesIO()
    image.save(out, format="PNG", transparency=0)
    return out.getvalue()


def mpo() -> bytes:
    out = io.BytesIO()
    views = [Image.new("RGB", (400, 480))]
    Image.new("RGB", (400, 480), SKIN).save(out, format="MPO", save_all=True, append_images=views)
    return out.getvalue()


def near(pixel: Any, color: tuple[int, int, int], slack: int = 8) -> bool:
    return all(abs(a - b) <= slack for a, b in zip(pixel, color, strict=True))


def corrupt_exif() -> bytes:
    return photo(exif=b"Exif\0\0MM\0*\0\0\0\x08\xff\xff\x01\x12")  # a directory of 65535 entries, holding one


ACCEPTED: dict[str, tuple[Callable[[], bytes], Callable[[Image.Image], bool]]] = {
    "16-bit-grey": (sixteen_bit_grey, lambda out: near(out.getpixel((200, 240)), (156, 156, 156))),
    "exif-rotated": (
        exif_rotated,
        lambda out: out.size == (400, 480) and near(out.getpixel((380, 20)), (0, 0, 255), 40),
    ),
    "cmyk": (cmyk, lambda out: near(out.getpixel((200, 240)), (255, 0, 0), 20)),
    "palette-with-alpha": (
        palette_with_alpha,
        lambda out: near(out.getpixel((100, 240)), (255, 255, 255)) and near(out.getpixel((300, 240)), SKIN),
    ),
    "camera-mpo": (mpo, lambda out: near(out.getpixel((200, 240)), SKIN)),
    "corrupt-exif": (
        corrupt_exif,
        lambda out: out.size == (400, 480) and near(out.getpixel((20, 20)), (0, 0, 255), 40),
    ),
    "jpeg-polyglot": (lambda: photo() + b"PK\x03\x04<script>alert(1)</script>", lambda out: out.size == (400, 480)),
}


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")
@pytest.mark.parametrize("kind", list(ACCEPTED))
async def test_odd_but_sound_photos_are_stored_as_the_user_sees_them(world: World, kind: str) -> None:
    made, looks_right = ACCEPTED[kind]
    data = made()
    submitted = await world.service.imagine.submit(
        ANN, ImagineInput(kind, "a knight", ChatTarget("c1"), photos=(data,))
    )
    job = await world.job(submitted.job_id)
    [key] = job.face_keys
    stored = await world.blobs.get(key)
    with Image.open(io.BytesIO(stored)) as out:
        out.load()
        assert out.format == "JPEG" and out.mode == "RGB"
        assert looks_right(out), (kind, out.size, out.getpixel((200, 240)))
    assert b"<script>" not in stored


# --- the quota read ahead of the submit ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "cost", "reason"),
    [
        ({}, 1, None),
        ({}, 11, RefusalReason.NO_CREDITS),
        ({"banned": True}, 1, RefusalReason.BANNED),
        ({"daily_jobs_limit": 1}, 1, RefusalReason.DAILY_LIMIT),
        ({"unlimited": True}, 500, None),
    ],
    ids=["fine", "no-credits", "banned", "daily-limit", "unlimited"],
)
async def test_the_quota_read_ahead_refuses_what_the_submit_would(
    db: Database, fields: dict[str, Any], cost: int, reason: RefusalReason | None
) -> None:
    user = await db.write(
        users.ensure_user, platform="telegram", platform_user_id="7", now=NOW, welcome_credits=WELCOME
    )
    uid = user.id or 0
    if fields:
        await db.write(users.set_user_fields, user_id=uid, **fields)
    if reason is RefusalReason.DAILY_LIMIT:  # the one job the limit allows today, already taken
        assert await db.write(quota.reserve, user_id=uid, cost=0, now=NOW, daily_jobs_default=20) is not None
    found = await db.read(quota.check, user_id=uid, cost=cost, now=NOW, daily_jobs_default=20)
    assert (found.reason if found else None) == reason
    reserved = await db.write(quota.reserve, user_id=uid, cost=cost, now=NOW, daily_jobs_default=20)
    assert (reserved is None) == (reason is not None)
