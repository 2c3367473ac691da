"""Telegram buttons in groups: they act for whoever asked, and a refused press tells the presser why."""

from __future__ import annotations

from pathlib import Path

from bot import messages
from tests.bot.telegram.stack import ADMIN_ID, face_photo, telegram_stack


async def test_in_a_group_only_the_asker_may_press_history_and_forget_buttons(tmp_path: Path) -> None:
    async with telegram_stack(tmp_path) as s:
        group = s.telegram.group()
        ann, bob = s.telegram.user("Ann"), s.telegram.user("Bob")

        def photos() -> int:
            return sum(1 for m in s.telegram.messages(group) if m.photo is not None)

        for n in range(6):
            s.telegram.send_photo(ann, group, face_photo(), caption=f"portrait number {n}")
            await s.telegram.wait_for(lambda: photos() == n + 1, timeout=15)  # noqa: B023 - awaited at once
        bob_private = s.telegram.private_chat(bob)
        s.telegram.send_photo(bob, bob_private, face_photo(color="tan"), caption="/face save bob")
        assert "Saved face 'bob'" in ((await s.reply_to(bob_private)).text or "")

        s.telegram.send_text(ann, group, "/history")
        page = await s.reply_to(group, lambda m: "page 1 of 2" in (m.text or ""))
        [older] = [button["callback_data"] for button in page.buttons if button["callback_data"].startswith("hi:")]
        assert older == f"hi:1:{ann.id}"
        refused = await s.telegram.wait_for_callback_answer(s.telegram.press_button(bob, page, older))
        assert (refused.text, refused.show_alert) == (messages.NOT_YOUR_BUTTONS, True)
        assert not page.edited  # Bob's own history did not replace Ann's page
        s.telegram.press_button(ann, page, older)
        await s.telegram.wait_for(lambda: "page 2 of 2" in (page.text or ""), timeout=10)
        pages = [button["callback_data"] for button in page.buttons if button["callback_data"].startswith("hi:")]
        assert pages == [f"hi:0:{ann.id}"]

        s.telegram.send_text(ann, group, "/forget")
        confirm = await s.reply_to(group, lambda m: m.text == messages.FORGET_CONFIRM)
        yes, no = (button["callback_data"] for button in confirm.buttons)
        assert (yes, no) == (f"fg:yes:{ann.id}", f"fg:no:{ann.id}")
        refused = await s.telegram.wait_for_callback_answer(s.telegram.press_button(bob, confirm, yes))
        assert refused.text == messages.NOT_YOUR_BUTTONS
        assert not confirm.edited
        s.telegram.send_text(bob, bob_private, "/face list")
        assert "bob (1 photo)" in ((await s.reply_to(bob_private)).text or "")  # Bob's data was not deleted

        answered = s.telegram.press_button(ann, confirm, yes)
        await s.telegram.wait_for(lambda: (confirm.text or "").startswith("Done. Deleted for good"), timeout=10)
        await s.telegram.wait_for_callback_answer(answered)
        s.telegram.send_text(ann, group, "/history")
        assert (await s.reply_to(group)).text == messages.NO_HISTORY


async def test_a_refused_reroll_tells_the_presser_why(tmp_path: Path) -> None:
    async with telegram_stack(tmp_path) as s:
        group = s.telegram.group()
        ann, bob = s.telegram.user("Ann"), s.telegram.user("Bob")
        s.telegram.send_photo(ann, group, face_photo(), caption="a portrait")
        result = await s.photo_result(group)
        reroll, vary = (button["callback_data"] for button in result.buttons)

        refused = await s.telegram.wait_for_callback_answer(s.telegram.press_button(bob, result, vary))
        assert (refused.text, refused.show_alert) == (messages.NOT_YOUR_JOB, True)
        # A query that can no longer be answered: the reason is said in the chat instead.
        s.telegram.fail_next(
            "answerCallbackQuery",
            error_code=400,
            description="Bad Request: query is too old and response timeout expired or query ID is invalid",
        )
        s.telegram.press_button(bob, result, reroll)
        said = await s.reply_to(group, lambda m: m.text == messages.NOT_YOUR_JOB)
        assert said.reply_to_message_id == result.message_id

        admin, admin_chat = s.person("Root", user_id=ADMIN_ID)
        s.telegram.send_text(admin, admin_chat, f"/admin grant {ann.id} -9")
        assert "balance now 0" in ((await s.reply_to(admin_chat)).text or "")
        short = await s.telegram.wait_for_callback_answer(s.telegram.press_button(ann, result, reroll))
        assert (short.text or "").startswith("Not enough credits") and short.show_alert
        assert len(s.fal.requests("submit")) == 1
