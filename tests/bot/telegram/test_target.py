"""The Telegram reply target: its JSON in the job row, read back the same by any later process."""

from __future__ import annotations

import pytest

from bot.telegram.target import TelegramTarget


def test_a_target_survives_its_json_and_gains_a_status_message() -> None:
    target = TelegramTarget(chat_id=-100123, message_id=7)
    assert target.to_json() == {"platform": "telegram", "chat_id": -100123, "message_id": 7}
    with_status = target.with_status(8)
    assert with_status.to_json() == {"platform": "telegram", "chat_id": -100123, "message_id": 7, "status_id": 8}
    assert TelegramTarget.from_json(with_status.to_json()) == with_status
    assert TelegramTarget.from_json(target.to_json()) == target


def test_another_platforms_target_is_not_read_as_telegrams() -> None:
    with pytest.raises(ValueError, match="discord"):
        TelegramTarget.from_json({"platform": "discord", "chat_id": 1})
