"""The bad-input corpus through the real Telegram front end and the fake Bot API: edits, channel posts,
messages on behalf of a chat, forged buttons and hostile captions each get their own answer (or, where
Telegram users expect silence, none), and cost nothing: no job, no charge, no stored photo, no render."""

from __future__ import annotations

import asyncio
import io
import struct
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from bot import messages
from bot.intake import MAX_BYTES
from storage import tables as t
from tests.bot.telegram.stack import Stack, face_photo, is_status, telegram_stack
from tests.fakes.telegram import TgChat, TgUser

SILENT = None  # the bot says nothing at all


def job_count(*, session: Connection) -> int:
    return int(session.execute(select(func.count()).select_from(t.jobs)).scalar_one())


def stored_files(s: Stack) -> set[Path]:
    return {path for path in (s.settings.data_dir / "blobs").rglob("*") if path.is_file()}


def png_bomb() -> bytes:
    """7071×7071 pixels of one colour: 156 KiB on the wire, 200 MiB if decoded."""
    side = 7071
    squeeze = zlib.compressobj(9)
    row = b"\0" + b"\x80" * (side * 3)
    body = b"".join(squeeze.compress(row) for _ in range(side)) + squeeze.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


async def victim_job(s: Stack) -> tuple[TgUser, str, str]:
    """Someone else's finished render in a group: its reroll and cancel data are what a forger would aim at."""
    victim, _private = s.person("Vic")
    group = s.telegram.group("Forgers")
    sent = s.telegram.send_photo(victim, group, face_photo(), caption="a knight")
    result = await s.photo_result(group)
    return victim, result.buttons[0]["callback_data"], f"cx:tg:{group.id}:{sent['message_id']}"


@dataclass(frozen=True)
class Sent:
    """A bad input sent by Mallory in her private chat, and what she is told (SILENT: nothing)."""

    send: Callable[[Stack, TgUser, TgChat], Awaitable[None]]
    reply: str | Callable[[str], bool] | None


async def edited_caption(s: Stack, user: TgUser, chat: TgChat) -> None:
    # A photo without a caption is answered; adding the caption by an edit must not render it later.
    sent = s.telegram.send_photo(user, chat, face_photo())
    assert (await s.reply_to(chat)).text == messages.PHOTO_NEEDS_CAPTION
    s.telegram.edit_message(sent, caption="a knight in armour")


async def edited_command(s: Stack, user: TgUser, chat: TgChat) -> None:
    sent = s.telegram.send_text(user, chat, "hello there")
    s.telegram.edit_message(sent, text="/imagine a knight")


async def channel_post(s: Stack, user: TgUser, chat: TgChat) -> None:
    channel = s.telegram.channel()
    s.telegram.post_in_channel(channel, photo=face_photo(), caption="a knight in shining armour")
    post = s.telegram.post_in_channel(channel, "/imagine a knight")
    s.telegram.edit_message(post, text="/imagine two knights")


def on_behalf(kind: str) -> Callable[[Stack, TgUser, TgChat], Awaitable[None]]:
    async def send(s: Stack, user: TgUser, chat: TgChat) -> None:
        group, channel = s.telegram.group(), s.telegram.channel()
        sender = group if kind == "anonymous-admin" else channel
        s.telegram.send_on_behalf_of(
            sender, group, photo=face_photo(), caption="a knight", automatic_forward=kind == "linked-channel"
        )
        assert (await s.reply_to(group)).text == messages.TELEGRAM_SENT_AS_CHAT

    return send


def caption(text: str) -> Callable[[Stack, TgUser, TgChat], Awaitable[None]]:
    async def send(s: Stack, user: TgUser, chat: TgChat) -> None:
        s.telegram.send_photo(user, chat, face_photo(), caption=text)

    return send


def document(data: bytes, name: str, mime: str, *, file_size: int | None = None) -> Callable[..., Awaitable[None]]:
    async def send(s: Stack, user: TgUser, chat: TgChat) -> None:
        s.telegram.send_document(user, chat, data, name, mime, caption="a knight", file_size=file_size)

    return send


async def oversized_photo(s: Stack, user: TgUser, chat: TgChat) -> None:
    s.telegram.send_photo(user, chat, face_photo(), caption="a knight", file_size=MAX_BYTES + 1)


SENT: dict[str, Sent] = {
    "edited-caption": Sent(edited_caption, SILENT),
    "edited-command": Sent(edited_command, SILENT),
    "channel-post": Sent(channel_post, SILENT),
    "anonymous-admin": Sent(on_behalf("anonymous-admin"), SILENT),
    "posting-as-a-channel": Sent(on_behalf("as-a-channel"), SILENT),
    "linked-channel-post": Sent(on_behalf("linked-channel"), SILENT),
    "mention-in-caption": Sent(
        caption("a portrait of @someone_else"), messages.prompt_mentions("prompt", "@someone_else")
    ),
    "bidi-in-caption": Sent(caption("a knight \u202etxet"), messages.hidden_characters("prompt", "U+202E")),
    "nan-in-caption": Sent(
        caption("a knight --guidance NaN"),
        messages.BAD_OPTION.format(flag="--guidance", value="NaN", expected="a finite number"),
    ),
    "unknown-option-in-caption": Sent(
        caption("a knight --hack 1"), lambda text: text.startswith("Unknown option --hack.")
    ),
    "text-named-jpg": Sent(document(b"just text\n", "face.jpg", "image/jpeg"), messages.PHOTO_NOT_IMAGE),
    "svg-document": Sent(
        document(b'<svg xmlns="http://www.w3.org/2000/svg"/>', "face.svg", "image/svg+xml"),
        messages.photo_kind_refused("SVG"),
    ),
    "bomb-document": Sent(
        document(png_bomb(), "face.png", "image/png"), messages.photo_too_big_to_open("PNG", 7071, 7071)
    ),
    "over-size-file": Sent(oversized_photo, messages.PHOTO_TOO_LARGE.format(mb=MAX_BYTES // 2**20)),
}


@pytest.mark.parametrize("kind", list(SENT))
async def test_bad_messages_get_their_own_answer_and_cost_nothing(tmp_path: Path, kind: str) -> None:
    case = SENT[kind]
    async with telegram_stack(tmp_path) as s:
        assert s.runtime is not None
        user, chat = s.person("Mallory")
        await case.send(s, user, chat)
        if case.reply is not SILENT:
            expected = case.reply
            told = await s.reply_to(
                chat, lambda m: expected(m.text or "") if callable(expected) else m.text == expected
            )
            assert told.reply_to_message_id is not None
        # Updates are handled concurrently: a later command's answer, and a little more time, let whatever
        # the bad message set off come to an end before the checks.
        s.telegram.send_text(user, chat, "/quota")
        assert "Credits: 10" in ((await s.reply_to(chat, lambda m: "Credits:" in (m.text or ""))).text or "")
        await asyncio.sleep(0.5)
        said = [m.text for m in s.telegram.messages(chat)]
        assert len(said) == (2 if kind == "edited-caption" else 1) + (case.reply is not SILENT), said
        assert await s.runtime.db.read(job_count) == 0
        assert stored_files(s) == set()
        assert s.fal.requests() == []
        row = await s.user_row(user)
        assert row is None or (row.credits, row.reserved, row.day_jobs) == (10, 0, 0)


async def test_a_png_named_gif_is_taken_by_its_content(tmp_path: Path) -> None:
    out = io.BytesIO()
    Image.new("RGB", (400, 480), "peachpuff").save(out, format="PNG")
    async with telegram_stack(tmp_path) as s:
        user, chat = s.person("Ann")
        s.telegram.send_document(user, chat, out.getvalue(), "face.gif", "image/gif", caption="a knight")
        await s.reply_to(chat, is_status)
        await s.photo_result(chat)
        assert len(s.fal.requests("submit")) == 1


# --- forged buttons ------------------------------------------------------------------------------------


FORGED: dict[str, Callable[[str, str], str]] = {
    "unknown-action": lambda reroll, cancel: "zz:1",
    "no-separator": lambda reroll, cancel: "garbage",
    "empty": lambda reroll, cancel: "",
    "someone-elses-reroll": lambda reroll, cancel: reroll,
    "someone-elses-vary": lambda reroll, cancel: "va:" + reroll.split(":", 1)[1],
    "someone-elses-cancel": lambda reroll, cancel: cancel,
    "unknown-job": lambda reroll, cancel: "rr:tg:1:999999",
    "history-not-a-number": lambda reroll, cancel: "hi:abc",
    "history-huge-page": lambda reroll, cancel: "hi:" + "9" * 30,
    "history-5000-digits": lambda reroll, cancel: "hi:" + "9" * 5000,
    "history-superscript-digit": lambda reroll, cancel: "hi:²",
    "forget-for-someone-else": lambda reroll, cancel: "fg:yes:1",
}
FORGED_ANSWERS: dict[str, str | None] = {
    "unknown-action": messages.BUTTON_EXPIRED,
    "no-separator": messages.BUTTON_EXPIRED,
    "empty": messages.BUTTON_EXPIRED,
    "someone-elses-reroll": messages.NOT_YOUR_JOB,
    "someone-elses-vary": messages.NOT_YOUR_JOB,
    "someone-elses-cancel": messages.NOT_YOUR_JOB,
    "unknown-job": messages.NOT_YOUR_JOB,
    "history-not-a-number": None,  # the first page, as a real button would show
    "history-huge-page": None,
    "history-5000-digits": None,
    "history-superscript-digit": None,
    "forget-for-someone-else": messages.NOT_YOUR_BUTTONS,
}


@pytest.mark.parametrize("kind", list(FORGED))
async def test_forged_button_data_is_refused_and_costs_nothing(tmp_path: Path, kind: str) -> None:
    async with telegram_stack(tmp_path) as s:
        assert s.runtime is not None
        victim, reroll, cancel = await victim_job(s)
        jobs_before, files_before, submits = await s.runtime.db.read(job_count), stored_files(s), len(s.fal.requests())
        mallory, chat = s.person("Mallory")
        s.telegram.send_text(mallory, chat, "/history")
        listing = await s.reply_to(chat)
        query = s.telegram.press_button(mallory, listing, FORGED[kind](reroll, cancel), check=False)
        answer = await s.telegram.wait_for_callback_answer(query)
        expected = FORGED_ANSWERS[kind]
        if expected is None:
            assert answer.text in (None, "") and not answer.show_alert
        else:
            assert answer.text == expected
        assert await s.runtime.db.read(job_count) == jobs_before
        assert stored_files(s) == files_before and len(s.fal.requests()) == submits
        row = await s.user_row(mallory)
        assert row is not None and (row.credits, row.reserved, row.day_jobs) == (10, 0, 0)
        victim_row = await s.user_row(victim)
        assert victim_row is not None and (victim_row.credits, victim_row.reserved) == (9, 0)
