"""The Discord reply target: its JSON in the job row, read back the same by any later process."""

from __future__ import annotations

import pytest

from bot.discord.target import DiscordTarget

TARGET = DiscordTarget(
    application_id=11,
    token="tok",
    token_expires=1_700_000_900.5,
    channel_id=22,
    user_id=33,
    guild_id=44,
    status_message_id=55,
    nsfw=True,
    size_limit=50 * 1024 * 1024,
)


def test_a_target_survives_its_json_with_ids_as_discord_writes_them() -> None:
    data = TARGET.to_json()
    assert data == {
        "platform": "discord",
        "application_id": "11",
        "token": "tok",
        "token_expires": 1_700_000_900.5,
        "channel_id": "22",
        "guild_id": "44",
        "user_id": "33",
        "status_message": "55",
        "nsfw": True,
        "size_limit": 50 * 1024 * 1024,
    }
    assert DiscordTarget.from_json(data) == TARGET


def test_a_direct_message_with_the_status_as_the_original_response() -> None:
    target = DiscordTarget(application_id=11, token="tok", token_expires=0.0, channel_id=22, user_id=33)
    data = target.to_json()
    assert (data["guild_id"], data["status_message"], data["nsfw"], data["size_limit"]) == (
        None,
        "@original",
        False,
        None,
    )
    assert DiscordTarget.from_json(data) == target


def test_another_platforms_target_is_not_read_as_discords() -> None:
    with pytest.raises(ValueError, match="telegram"):
        DiscordTarget.from_json({"platform": "telegram", "chat_id": 1})
