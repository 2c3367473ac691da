"""Telegram end to end: the real python-telegram-bot against a fake Bot API, fake fal.ai behind it."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from storage.states import DeliveryState, JobState
from tests.bot.telegram.stack import ADMIN_ID, face_photo, is_status, telegram_stack
from tests.fakes.fal import FalOutcome, FalScript

# python-telegram-bot reads its own deprecated RetryAfter.retry_after when it handles a 429.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Deprecated since version v22\\.2. In a future major version attribute `retry_after` will be "
    "of type `datetime\\.timedelta`:telegram.warnings.PTBDeprecationWarning"
)


async def test_photo_with_caption_renders_and_charges_once(tmp_path: Path) -> None:
    async with telegram_stack(tmp_path) as s:
        user, chat = s.person()
        s.telegram.send_photo(user, chat, face_photo(), caption="a knight in shining armour --ar 3:4")
        status = await s.reply_to(chat, is_status)
        assert [b["callback_data"] for b in status.buttons] == [f"cx:tg:{chat.id}:1"]
        result = await s.photo_result(chat)
        assert "a knight in shining armour" in (result.caption or "") and "fal-flux-pulid" in (result.caption or "")
        assert [b["callback_data"].split(":")[0] for b in result.buttons] == ["rr", "va"]
        with Image.open(io.BytesIO(result.photo or b"")) as image:
            assert image.width > 0
        submitted = s.fal.requests("submit")[0].json()
        assert submitted["image_size"] == {"width": 880, "height": 1184}
        row = await s.user_row(user)
        assert row is not None and (row.credits, row.reserved) == (9, 0)
        job = await s.settled(f"tg:{chat.id}:1")
        assert job.delivery_path == "reply"


async def test_reroll_and_vary_render_again_and_cancel_refunds(tmp_path: Path) -> None:
    async with telegram_stack(tmp_path) as s:
        user, chat = s.person()
        s.telegram.send_photo(user, chat, face_photo(), caption="a portrait --seed 5")
        first = await s.photo_result(chat)
        s.telegram.press_button(user, first, first.buttons[0]["callback_data"])
        second = await s.reply_to(chat, lambda m: m.photo is not None)
        s.telegram.press_button(user, first, first.buttons[1]["callback_data"])
        third = await s.reply_to(chat, lambda m: m.photo is not None)
        seeds = [r.json()["seed"] for r in s.fal.requests("submit")]
        assert seeds[0] == 5 and len(set(seeds)) == 3
        assert second.caption and third.caption
        row = await s.user_row(user)
        assert row is not None and row.credits == 7

        s.fal.script = FalScript(outcome=FalOutcome.STUCK)
        s.telegram.send_photo(user, chat, face_photo(), caption="a slow one")
        status = await s.reply_to(chat, lambda m: bool(m.buttons) and m.buttons[0]["callback_data"].startswith("cx:"))
        await s.telegram.wait_for(lambda: len(s.fal.requests("status")) > 3, timeout=10)
        s.telegram.press_button(user, status, status.buttons[0]["callback_data"])
        done = await s.reply_to(chat, lambda m: m.text is not None and "Cancelled" in m.text)
        assert "refunded" in (done.text or "")
        await s.telegram.wait_for(lambda: len(s.fal.requests("cancel")) == 1, timeout=5)
        row = await s.user_row(user)
        assert row is not None and (row.credits, row.reserved) == (7, 0)


async def test_saved_face_is_used_by_imagine_without_a_photo(tmp_path: Path) -> None:
    async with telegram_stack(tmp_path) as s:
        user, chat = s.person()
        s.telegram.send_text(user, chat, "/imagine a pirate")
        refusal = await s.reply_to(chat)
        assert "save one first" in (refusal.text or "")
        s.telegram.send_photo(user, chat, face_photo(color="tan"), caption="/face save me")
        saved = await s.reply_to(chat)
        assert saved.text == "Saved face 'me' (1 photo); it is now your default."
        s.telegram.send_text(user, chat, "/imagine a pirate")
        result = await s.photo_result(chat)
        assert "a pirate" in (result.caption or "")
        reference = s.fal.requests("submit")[0].json()["reference_image_url"]
        assert reference.startswith("data:image/jpeg;base64,")
        s.telegram.send_text(user, chat, "/face list")
        listing = await s.reply_to(chat)
        assert "me (1 photo) — default" in (listing.text or "")


async def test_admin_grants_and_limits_non_admin_refused_banned_refused(tmp_path: Path) -> None:
    async with telegram_stack(tmp_path) as s:
        admin, admin_chat = s.person("Root", user_id=ADMIN_ID)
        user, chat = s.person("Bob")
        s.telegram.send_text(user, chat, "/quota")
        assert "Credits: 10" in ((await s.reply_to(chat)).text or "")
        s.telegram.send_text(admin, admin_chat, f"/admin grant {user.id} 5")
        assert (await s.reply_to(admin_chat)).text == f"Granted 5 credits to telegram:{user.id}; balance now 15."
        s.telegram.send_text(admin, admin_chat, f"/admin limit {user.id} 1")
        assert "set to 1" in ((await s.reply_to(admin_chat)).text or "")
        s.telegram.send_text(user, chat, f"/admin grant {user.id} 100")
        assert (await s.reply_to(chat)).text == "Only bot admins can do that."
        s.telegram.send_photo(user, chat, face_photo(), caption="first")
        await s.photo_result(chat)
        s.telegram.send_photo(user, chat, face_photo(), caption="second")
        assert "today's limit of 1" in ((await s.reply_to(chat)).text or "")
        s.telegram.send_text(admin, admin_chat, f"/admin ban {user.id} spam")
        await s.reply_to(admin_chat)
        s.telegram.send_text(user, chat, "/admin limit default 50")
        await s.reply_to(chat)
        s.telegram.send_photo(user, chat, face_photo(), caption="third")
        assert (await s.reply_to(chat)).text == "You can't use this bot."
        row = await s.user_row(user)
        assert row is not None and (row.credits, row.reserved, row.banned) == (14, 0, True)


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


async def test_bad_files_get_a_clear_reply_and_no_charge(tmp_path: Path) -> None:
    async with telegram_stack(tmp_path) as s:
        user, chat = s.person()
        s.telegram.send_document(user, chat, b"just some text\n", "face.jpg", "image/jpeg", caption="a knight")
        assert "JPEG, PNG or WebP" in ((await s.reply_to(chat)).text or "")
        s.telegram.send_document(user, chat, _png_header_only(30_000, 30_000), "huge.png", "image/png", caption="x")
        assert "too many pixels" in ((await s.reply_to(chat)).text or "")
        truncated = face_photo()[:600]
        s.telegram.send_document(user, chat, truncated, "cut.jpg", "image/jpeg", caption="a knight")
        assert "damaged or incomplete" in ((await s.reply_to(chat)).text or "")
        s.telegram.send_photo(user, chat, face_photo(), caption="a knight", file_size=25 * 1024 * 1024)
        assert "too large" in ((await s.reply_to(chat)).text or "")
        s.telegram.send_photo(user, chat, face_photo((100, 120)), caption="a knight")
        assert "too small" in ((await s.reply_to(chat)).text or "")
        row = await s.user_row(user)
        assert row is not None and (row.credits, row.reserved, row.day_jobs) == (10, 0, 0)
        assert s.fal.requests() == []


async def test_a_restart_while_rendering_still_delivers_exactly_once(tmp_path: Path) -> None:
    async with telegram_stack(tmp_path) as s:
        user, chat = s.person()
        s.fal.script = FalScript(queue_ticks=10_000)
        s.telegram.send_photo(user, chat, face_photo(), caption="through a restart")
        await s.telegram.wait_for(lambda: len(s.fal.requests("status")) > 2, timeout=10)
        await s.stop()
        job_id = f"tg:{chat.id}:1"
        for fal_job in s.fal.jobs.values():
            fal_job.script.queue_ticks = 0  # the provider finishes while we are down
        await s.start()
        result = await s.photo_result(chat, timeout=20)
        assert "through a restart" in (result.caption or "")
        job = await s.job(job_id)
        assert job is not None and job.state == JobState.SUCCEEDED and job.attempt == 2
        assert len(s.fal.requests("submit")) == 1
        await s.restart()  # a further restart must not post it again
        photos = [m for m in s.telegram.messages(chat) if m.photo is not None]
        assert len(photos) == 1
        row = await s.user_row(user)
        assert row is not None and row.credits == 9


async def test_bot_api_429_is_retried(tmp_path: Path) -> None:
    async with telegram_stack(tmp_path) as s:
        user, chat = s.person()
        s.telegram.rate_limit("sendPhoto", retry_after=1)
        s.telegram.send_photo(user, chat, face_photo(), caption="patience")
        result = await s.photo_result(chat, timeout=20)
        assert result.caption and s.telegram.flood_counts["sendPhoto"] == 1


async def test_user_who_blocked_the_bot_is_marked_undeliverable(tmp_path: Path) -> None:
    async with telegram_stack(tmp_path) as s:
        user, chat = s.person()
        s.fal.script = FalScript(queue_ticks=3)
        s.telegram.send_photo(user, chat, face_photo(), caption="never seen")
        await s.reply_to(chat, is_status)
        s.telegram.block(user)
        job = await s.settled(f"tg:{chat.id}:1", DeliveryState.UNDELIVERABLE)
        assert job.state == JobState.SUCCEEDED
        row = await s.user_row(user)
        assert row is not None and row.credits == 10  # rendered, but it could never be shown: refunded


async def test_a_duplicated_update_makes_no_second_job(tmp_path: Path) -> None:
    async with telegram_stack(tmp_path) as s:
        user, chat = s.person()
        message = s.telegram.send_photo(user, chat, face_photo(), caption="only once")
        s.telegram.inject_update("message", message)  # Telegram re-sends the same message
        await s.photo_result(chat)
        await s.settled(f"tg:{chat.id}:{message['message_id']}")
        assert len(s.fal.requests("submit")) == 1
        assert len([m for m in s.telegram.messages(chat) if is_status(m)]) == 1
        row = await s.user_row(user)
        assert row is not None and row.credits == 9


async def test_album_counts_as_one_identity_and_history_pages(tmp_path: Path) -> None:
    async with telegram_stack(tmp_path, route=["fal-pulid"]) as s:
        user, chat = s.person()
        s.telegram.send_album(user, chat, [face_photo(color=c) for c in ("tan", "peru", "wheat")], caption="a duke")
        await s.photo_result(chat)
        references = s.fal.requests("submit")[0].json()["reference_images"]
        assert len(references) == 3
        s.telegram.send_text(user, chat, "/history")
        page = await s.reply_to(chat)
        assert "a duke" in (page.text or "") and "fal-pulid" in (page.text or "")
        s.telegram.send_text(user, chat, "/forget")
        confirm = await s.reply_to(chat)
        s.telegram.press_button(user, confirm, confirm.buttons[0]["callback_data"])
        await s.telegram.wait_for(lambda: "Deleted for good" in (confirm.text or ""), timeout=10)
        s.telegram.send_text(user, chat, "/history")
        assert "haven't rendered anything" in ((await s.reply_to(chat)).text or "")


async def test_webhook_mode_with_a_secret_token(tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    webhook = {
        "webhook_url": f"http://127.0.0.1:{port}/telegram",
        "webhook_listen": f"127.0.0.1:{port}",
        "webhook_secret": "s3cret-token",
    }
    async with telegram_stack(tmp_path, telegram_extra=webhook) as s:
        assert s.telegram.webhook_url == webhook["webhook_url"]
        user, chat = s.person()
        s.telegram.send_photo(user, chat, face_photo(), caption="by webhook")
        result = await s.photo_result(chat)
        assert "by webhook" in (result.caption or "")
        forged = {
            "update_id": 999_999,
            "message": {"message_id": 77, "date": 0, "chat": {"id": chat.id, "type": "private"}},
        }
        assert await s.telegram.deliver_via_webhook(forged, secret_token="wrong") == 403


async def test_saved_faces_are_capped_per_user(tmp_path: Path) -> None:
    async with telegram_stack(tmp_path, max_identities=1) as s:
        user, chat = s.person()
        s.telegram.send_photo(user, chat, face_photo(), caption="/face save first")
        assert "Saved face 'first'" in ((await s.reply_to(chat)).text or "")
        s.telegram.send_photo(user, chat, face_photo(), caption="/face save second")
        assert "You can keep at most 1 face." in ((await s.reply_to(chat)).text or "")
        s.telegram.send_photo(user, chat, face_photo(color="tan"), caption="/face save first")  # replacing is fine
        assert "Saved face 'first'" in ((await s.reply_to(chat)).text or "")


def test_results_that_break_photo_limits_go_as_documents() -> None:
    from bot.service.replies import ReplyImage
    from bot.telegram.frontend import _fits_as_photo

    assert _fits_as_photo(ReplyImage(b"x" * 1000, "image/png", 1024, 1024))
    assert not _fits_as_photo(ReplyImage(b"x" * (11 * 1024 * 1024), "image/png", 1024, 1024))
    assert not _fits_as_photo(ReplyImage(b"x", "image/png", 8000, 3000))
    assert not _fits_as_photo(ReplyImage(b"x", "image/png", 4200, 200))
