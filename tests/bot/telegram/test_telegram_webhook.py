"""Telegram's webhook mode: it needs a secret token, and listens on loopback unless told otherwise."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from bot.errors import OperatorError
from bot.settings import TelegramSettings
from tests.bot.telegram.stack import Stack, face_photo, stack_settings, telegram_stack
from tests.fakes import fal
from tests.fakes.telegram import FakeTelegram


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_webhook_server_listens_on_loopback_by_default() -> None:
    assert TelegramSettings().webhook_listen == "127.0.0.1:8443"


@pytest.mark.parametrize(
    ("secret", "reason"),
    [(None, "needs a secret token"), ("", "needs a secret token"), ("not allowed!", "use 1-256 of")],
    ids=["unset", "empty", "bad-characters"],
)
async def test_webhook_mode_refuses_to_start_without_a_usable_secret(
    tmp_path: Path, secret: str | None, reason: str
) -> None:
    port = free_port()
    webhook: dict[str, object] = {"webhook_url": f"http://127.0.0.1:{port}/telegram"}
    if secret is not None:
        webhook["webhook_secret"] = secret
    async with FakeTelegram() as telegram, fal.start_fal() as fake_fal:
        stack = Stack(telegram, fake_fal, stack_settings(tmp_path, telegram, fake_fal, telegram_extra=webhook))
        with pytest.raises(OperatorError) as refused:
            await stack.start(webhook=True)
        line = str(refused.value)
        assert line.startswith("LIKENESS_TELEGRAM__WEBHOOK_SECRET: ") and reason in line and "\n" not in line
        # Refused before anything was asked of Telegram, and nothing listens for forged updates.
        assert telegram.calls == []
        with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
            probe.connect(("127.0.0.1", port))


async def test_a_webhook_with_a_secret_serves_updates_and_refuses_forged_ones(tmp_path: Path) -> None:
    port = free_port()
    webhook = {
        "webhook_url": f"http://127.0.0.1:{port}/telegram",
        "webhook_listen": f"127.0.0.1:{port}",
        "webhook_secret": "s3cret-token",
    }
    async with telegram_stack(tmp_path, telegram_extra=webhook) as s:
        user, chat = s.person()
        s.telegram.send_text(user, chat, "/quota")
        assert "Credits: 10" in ((await s.reply_to(chat)).text or "")
        s.telegram.send_photo(user, chat, face_photo(), caption="by webhook")
        assert "by webhook" in ((await s.photo_result(chat)).caption or "")
        admin_command = {
            "update_id": 999_999,
            "message": {
                "message_id": 77,
                "date": 0,
                "chat": {"id": chat.id, "type": "private"},
                "from": {"id": 4242, "is_bot": False, "first_name": "Root"},
                "text": f"/admin grant {user.id} 1000",
                "entities": [{"type": "bot_command", "offset": 0, "length": 6}],
            },
        }
        assert await s.telegram.deliver_via_webhook(admin_command, secret_token="wrong") == 403
        assert await s.telegram.deliver_via_webhook(admin_command, secret_token=None) == 403
        row = await s.user_row(user)
        assert row is not None and row.credits == 9
