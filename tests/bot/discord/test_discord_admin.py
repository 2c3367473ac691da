"""Who may administer the bot from Discord: the admin role by id in the operator's servers, a server's own
managers for that server's settings only, whatever Discord's command permissions let through."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bot import messages
from bot.settings import Settings
from tests.fakes.discord import ADMINISTRATOR, MANAGE_GUILD, FakeChannel, FakeUser, InteractionRecord, Upload

from .conftest import Stack, audit_of, face_png

pytestmark = pytest.mark.timeout(30)


async def answer(
    stack: Stack, who: FakeUser, channel: FakeChannel, name: str, options: dict[str, object] | None = None
) -> str:
    """The private answer to a slash command."""
    ix: InteractionRecord = await stack.discord.slash(who, channel, name, options)
    original = await stack.discord.wait_for(
        lambda: ix.original if ix.original and ix.original.content else None, timeout=10
    )
    assert ix.ephemeral
    return original.content


async def test_a_role_named_like_the_admin_role_in_another_server_gives_no_global_power(stack: Stack) -> None:
    fake = stack.discord
    # Anyone can add the bot to a server of their own and make a role called "Admin" there.
    mallory = fake.add_user("mallory", member=False)
    own = fake.add_guild("Mallory's place", mallory)
    fake.add_role(own, "Admin", ADMINISTRATOR, members=[mallory])
    lobby = fake.add_channel("lobby", guild=own)
    async with stack.serving():
        refused: dict[str, dict[str, object]] = {
            "admin grant": {"user": str(mallory.id), "credits": 1000},
            "admin limit": {"user": "default", "jobs": 0},
            "admin ban": {"user": f"<@{fake.alice.id}>"},
            "admin stats": {},
        }
        for name, options in refused.items():
            assert await answer(stack, mallory, lobby, name, options) == messages.NOT_ADMIN, name

        # Her own server's settings are hers to change: its channels, and pausing it.
        added = await answer(stack, mallory, lobby, "admin channels add")
        assert f"<#{lobby.id}>" in added
        assert await answer(stack, mallory, lobby, "admin pause", {"reason": "mine"}) == messages.paused("mine")

        # That pause covers her server only; the operator's server still renders.
        ix = await stack.discord.slash(
            fake.alice,
            fake.general,
            "imagine",
            {"prompt": "an astronaut"},
            attachments={"photo": Upload("me.png", face_png(), "image/png")},
        )
        assert (await stack.delivered(f"dc:{ix.id}")).delivery_path == "interaction"

        assert await stack.db.read(audit_of, target=f"discord:{mallory.id}") == []
        assert await stack.db.read(audit_of, target="default") == []
        assert await stack.db.read(audit_of, target=f"discord:guild:{own.id}") == [
            (f"discord:{mallory.id}", "channels-add"),
            (f"discord:{mallory.id}", "pause"),
        ]


async def test_a_server_manager_at_home_manages_the_server_but_is_no_bot_admin(stack: Stack) -> None:
    fake = stack.discord
    manager = fake.add_user("manager", permissions=MANAGE_GUILD | ADMINISTRATOR)
    async with stack.serving():
        assert await answer(stack, manager, fake.general, "admin grant", {"user": str(manager.id), "credits": 5}) == (
            messages.NOT_ADMIN
        )
        assert await answer(stack, manager, fake.general, "admin channels list") == messages.DISCORD_ALL_CHANNELS

        # A plain member may not even change the server's settings.
        assert await answer(stack, fake.alice, fake.general, "admin channels clear") == messages.NOT_SERVER_MANAGER
        assert await answer(stack, fake.alice, fake.general, "admin resume") == messages.NOT_SERVER_MANAGER

        # The admin role, by id, in the operator's server: a bot admin.
        granted = await answer(
            stack, fake.admin, fake.general, "admin grant", {"user": str(fake.alice.id), "credits": 5}
        )
        assert granted.startswith("Granted 5 credits")


async def test_the_admin_role_counts_only_in_the_servers_named_as_home(
    stack: Stack, make_settings: Callable[..., Settings]
) -> None:
    fake = stack.discord
    elsewhere = make_settings(
        discord={
            "token": fake.token,
            "api_base": fake.api_base,
            "gateway_url": fake.gateway_url,
            "admin_role": str(fake.admin_role.id),
            "admin_guilds": ["1"],
        }
    )
    async with stack.serving(elsewhere):
        refused = await answer(
            stack, fake.admin, fake.general, "admin grant", {"user": str(fake.alice.id), "credits": 5}
        )
        assert refused == messages.NOT_ADMIN


async def test_a_bot_admin_listed_by_id_may_act_from_any_server(
    stack: Stack, make_settings: Callable[..., Settings]
) -> None:
    fake = stack.discord
    operator = fake.add_user("operator", member=False)
    own = fake.add_guild("Operator's test server", operator)
    lab = fake.add_channel("lab", guild=own)
    async with stack.serving(make_settings(admins=[f"discord:{operator.id}"])):
        granted = await answer(stack, operator, lab, "admin grant", {"user": str(fake.alice.id), "credits": 3})
        assert granted.startswith("Granted 3 credits")
