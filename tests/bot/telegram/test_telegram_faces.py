"""Face checks, the likeness score and its free re-render, the privacy notice and the /forget receipt, end to end
through python-telegram-bot, the fake Bot API and the fake fal.ai, on real photos."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image
from sqlalchemy import select
from sqlalchemy.engine import Connection

from bot import messages
from storage import tables as t
from tests.bot.telegram.stack import Stack, is_status, telegram_stack
from tests.engine.judge import photos
from tests.fakes.fal import FalScript
from tests.fakes.telegram import BotMessage, TgChat, TgUser

JUDGED = {"judge": {"enabled": True}, "privacy": {"consent": True}}


def jpeg(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="JPEG", quality=95)
    return out.getvalue()


def tom() -> bytes:
    return jpeg(photos.scaled(photos.tom(), 3))


def tom_rendered() -> bytes:
    """Tom Hanks as a render might show him: mirrored, larger and slightly turned."""
    return jpeg(photos.rotated(photos.scaled(photos.flipped(photos.tom()), 4), 6))


def events(*, session: Connection, job_id: str) -> list[tuple[str, dict[str, object]]]:
    e = t.job_events.c
    rows = session.execute(select(e.kind, e.data).where(e.job_id == job_id).order_by(e.id))
    return [(str(kind), dict(data)) for kind, data in rows]


def ledger(*, session: Connection, job_id: str) -> list[str]:
    return sorted(str(kind) for (kind,) in session.execute(select(t.ledger.c.kind).where(t.ledger.c.job_id == job_id)))


async def agree(s: Stack, user: TgUser, chat: TgChat) -> None:
    """Send a face, get the privacy notice instead of a job, press "I agree"."""
    s.telegram.send_photo(user, chat, tom(), caption="a portrait")
    notice = await s.reply_to(chat, lambda m: m.text is not None and m.text.startswith("Before I use a face photo"))
    assert [(b["text"], b["callback_data"]) for b in notice.buttons] == [(messages.PRIVACY_AGREE, f"pv:yes:{user.id}")]
    s.telegram.press_button(user, notice, notice.buttons[0]["callback_data"])
    await s.telegram.wait_for(lambda: "your agreement is recorded" in (notice.text or ""), timeout=10)
    assert notice.buttons == []


async def test_the_privacy_notice_comes_first_and_nothing_is_kept_until_agreed(tmp_path: Path) -> None:
    async with telegram_stack(tmp_path, **JUDGED) as s:
        user, chat = s.person()
        s.telegram.send_text(user, chat, "/privacy")
        shown = await s.reply_to(chat)
        assert shown.text == messages.privacy_notice(30) and shown.buttons
        await agree(s, user, chat)
        assert s.fal.requests("submit") == []  # nothing was rendered, or charged, for the refused photo
        row = await s.user_row(user)
        assert row is not None and row.privacy_accepted_at is not None and (row.credits, row.reserved) == (10, 0)
        assert not any((tmp_path / "data" / "blobs").rglob("*.jpg")) and not [
            p for p in (tmp_path / "data" / "blobs").rglob("*") if p.is_file()
        ]
        s.telegram.send_text(user, chat, "/privacy")
        again = await s.reply_to(chat)
        assert "You agreed on" in (again.text or "") and again.buttons == []


async def test_bad_photos_are_refused_with_the_reason_and_cost_nothing(tmp_path: Path) -> None:
    async with telegram_stack(tmp_path, **JUDGED) as s:
        user, chat = s.person()
        await agree(s, user, chat)
        cases = [
            (jpeg(photos.group()), "I see 5 faces of similar size in that photo"),
            (jpeg(photos.blurred(photos.scaled(photos.tom(), 3), 3)), "That photo is too blurred"),
            (jpeg(photos.darkened(photos.scaled(photos.tom(), 3), 0.2)), "That photo is too dark to read the face"),
        ]
        for photo, said in cases:
            s.telegram.send_photo(user, chat, photo, caption="a portrait")
            refused = await s.reply_to(chat)
            assert (refused.text or "").startswith(said), refused.text
        assert s.fal.requests("submit") == []
        row = await s.user_row(user)
        assert row is not None and (row.credits, row.reserved) == (10, 0)


async def test_someone_else_s_face_is_rendered_again_free_and_the_better_image_comes_with_its_score(
    tmp_path: Path,
) -> None:
    async with telegram_stack(tmp_path, **JUDGED) as s:
        user, chat = s.person()
        await agree(s, user, chat)
        s.fal.next_scripts = [
            FalScript(queue_ticks=0, run_ticks=0, output=jpeg(photos.astronaut())),
            FalScript(queue_ticks=0, run_ticks=0, output=tom_rendered()),
        ]
        s.telegram.send_photo(user, chat, tom(), caption="a lighthouse keeper")
        await s.reply_to(chat, is_status)
        result = await s.photo_result(chat)
        job_id = f"tg:{chat.id}:{result.reply_to_message_id}"
        job = await s.settled(job_id)

        submits = s.fal.requests("submit")
        assert len(submits) == 2  # exactly one free re-render
        assert submits[1].json()["seed"] != submits[0].json().get("seed")  # a new seed
        assert result.photo == tom_rendered()
        caption = result.caption or ""
        assert caption.startswith("a lighthouse keeper") and "· likeness " in caption
        score = int(caption.rsplit("likeness ", 1)[1].rstrip("%"))
        assert score > 70
        row = await s.user_row(user)
        assert row is not None and (row.credits, row.reserved) == (9, 0)  # one charge
        assert s.runtime is not None
        assert await s.runtime.db.read(ledger, job_id=job_id) == ["commit", "reserve"]
        history = await s.runtime.db.read(events, job_id=job_id)
        renders = [data for kind, data in history if kind == "render"]
        assert len(renders) == 2 and all(float(str(r["spend_usd"])) > 0 for r in renders)  # two spend records
        assert job.spend_usd == sum(float(str(r["spend_usd"])) for r in renders)
        assert [kind for kind, _data in history].count("likeness_retry") == 1


async def test_forget_answers_with_a_receipt(tmp_path: Path) -> None:
    async with telegram_stack(tmp_path, **JUDGED) as s:
        user, chat = s.person()
        await agree(s, user, chat)
        s.fal.script = FalScript(queue_ticks=0, run_ticks=0, output=tom_rendered())
        s.telegram.send_photo(user, chat, tom(), caption="/face save me")
        assert (await s.reply_to(chat)).text == messages.face_saved("me", 1)
        s.telegram.send_text(user, chat, "/imagine a pirate")
        result = await s.photo_result(chat)
        await s.settled(f"tg:{chat.id}:{result.reply_to_message_id}")
        s.telegram.send_text(user, chat, "/forget")
        confirm: BotMessage = await s.reply_to(chat, lambda m: m.text == messages.FORGET_CONFIRM)
        s.telegram.press_button(user, confirm, confirm.buttons[0]["callback_data"])
        receipt = messages.forgotten(identities=1, photos=1, embeddings=2, results=1, history=1)
        await s.telegram.wait_for(lambda: confirm.text == receipt, timeout=10)
