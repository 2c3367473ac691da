"""Who a Telegram message is from: messages on behalf of a chat, channel posts and edits run nothing."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from bot import messages
from tests.bot.telegram.stack import ADMIN_ID, Stack, face_photo, telegram_stack
from tests.fakes.telegram import CHANNEL_BOT, GROUP_ANONYMOUS_BOT, SERVICE_NOTIFICATIONS, TgChat


async def settle(s: Stack, chat: TgChat) -> None:
    """Let the bot finish what it took so far: a later command's answer has come, and a little more time."""
    user, private = s.person("Sync")
    s.telegram.send_text(user, private, "/help")
    await s.reply_to(private)
    await asyncio.sleep(0.5)


@pytest.mark.parametrize("sender", ["anonymous-admin", "as-a-channel", "linked-channel-post"])
async def test_messages_sent_on_behalf_of_a_chat_are_refused_with_a_reason(tmp_path: Path, sender: str) -> None:
    async with telegram_stack(tmp_path) as s:
        group, channel = s.telegram.group(), s.telegram.channel()
        on_behalf_of = group if sender == "anonymous-admin" else channel
        forward = sender == "linked-channel-post"

        s.telegram.send_on_behalf_of(on_behalf_of, group, "/quota", automatic_forward=forward)
        assert (await s.reply_to(group)).text == messages.TELEGRAM_SENT_AS_CHAT
        s.telegram.send_on_behalf_of(
            on_behalf_of, group, photo=face_photo(), caption="a knight", automatic_forward=forward
        )
        assert (await s.reply_to(group)).text == messages.TELEGRAM_SENT_AS_CHAT
        s.telegram.send_on_behalf_of(on_behalf_of, group, "/forget", automatic_forward=forward)
        refusal = await s.reply_to(group)
        assert refusal.text == messages.TELEGRAM_SENT_AS_CHAT and refusal.buttons == []

        # No account was made for the placeholder sender that many people share, and nothing was rendered.
        for placeholder in (GROUP_ANONYMOUS_BOT, CHANNEL_BOT, SERVICE_NOTIFICATIONS):
            assert await s.user_row(placeholder) is None
        assert s.fal.requests() == []

        # A person in the same group is served as usual.
        ann = s.telegram.user("Ann")
        s.telegram.send_text(ann, group, "/quota")
        assert "Credits: 10" in ((await s.reply_to(group)).text or "")


async def test_channel_posts_are_left_alone_without_an_error(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with telegram_stack(tmp_path) as s:
        channel = s.telegram.channel()
        s.telegram.post_in_channel(channel, photo=face_photo(), caption="a knight in shining armour")
        s.telegram.post_in_channel(channel, "/imagine a knight")
        post = s.telegram.post_in_channel(channel, "/quota")
        s.telegram.edit_message(post, text="/history")
        await settle(s, channel)

        assert s.telegram.messages(channel) == []
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
        assert s.fal.requests() == []
        assert s.telegram.pending_updates == []


async def test_an_edited_command_does_not_run_again(tmp_path: Path) -> None:
    async with telegram_stack(tmp_path) as s:
        admin, admin_chat = s.person("Root", user_id=ADMIN_ID)
        bob, bob_chat = s.person("Bob")
        command = s.telegram.send_text(admin, admin_chat, f"/admin grant {bob.id} 5")
        granted = f"Granted 5 credits to telegram:{bob.id}; balance now 15."
        assert (await s.reply_to(admin_chat)).text == granted
        s.telegram.edit_message(command, text=f"/admin grant {bob.id} 50")

        # Nor does an edited caption save a face again or render again.
        saving = s.telegram.send_photo(bob, bob_chat, face_photo(), caption="/face save me")
        assert "Saved face 'me'" in ((await s.reply_to(bob_chat)).text or "")
        s.telegram.edit_message(saving, caption="/face save you")
        await settle(s, admin_chat)

        assert [m.text for m in s.telegram.messages(admin_chat)] == [granted]
        row = await s.user_row(bob)
        assert row is not None and row.credits == 15
        s.telegram.send_text(bob, bob_chat, "/face list")
        listing = await s.reply_to(bob_chat)
        assert "me (1 photo)" in (listing.text or "") and "you" not in (listing.text or "")
        assert s.fal.requests() == []
