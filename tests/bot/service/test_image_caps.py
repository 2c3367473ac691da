"""A server's or group's own daily image cap: set by its admins there, whatever its members' credits."""

from __future__ import annotations

import pytest

from bot import messages
from bot.errors import UserError
from bot.service.actors import Actor
from bot.service.imagine import ImagineInput
from tests.bot.service.conftest import ADMIN, ANN, GENERAL, GUILD, MEMBER, ChatTarget, World, face_photo

MANAGER = Actor("discord", "405", "Meg", chat_id=GENERAL, guild_id=GUILD, manages_guild=True)
ELSEWHERE = Actor("discord", "301", "Cy", chat_id="555", guild_id="556")
GROUP_ADMIN = Actor("telegram", "600", "Gus", chat_id="-1001", manages_guild=True)
GROUP_MEMBER = Actor("telegram", "601", "Hal", chat_id="-1001")


def asked(event: str, prompt: str = "a knight") -> ImagineInput:
    return ImagineInput(event, prompt, ChatTarget("c1"), photos=(face_photo(),))


async def test_a_server_manager_caps_images_there_and_members_are_refused_past_it(world: World) -> None:
    with pytest.raises(UserError) as refused:
        await world.service.admin.images(MEMBER, "2")
    assert refused.value.message == messages.NOT_SERVER_MANAGER
    assert await world.service.admin.images(MANAGER, "2") == messages.image_cap("in this server", 2, 0)
    await world.service.admin.grant(ADMIN, MEMBER.key, "100")  # credits do not lift the cap

    await world.service.imagine.submit(MEMBER, asked("e1"))
    await world.service.imagine.submit(MANAGER, asked("e2"))
    with pytest.raises(UserError) as capped:
        await world.service.imagine.submit(MEMBER, asked("e3"))
    assert capped.value.message == messages.scope_cap_reached(2)
    assert (await world.user(MEMBER)).reserved == 1  # the refused job held nothing
    # Elsewhere (another server, a private chat) the cap does not apply.
    await world.service.imagine.submit(ELSEWHERE, asked("e4"))
    await world.service.imagine.submit(ANN, asked("e5"))
    assert await world.service.admin.images(MANAGER) == messages.image_cap("in this server", 2, 2)
    assert await world.service.admin.images(MANAGER, "off") == messages.image_cap("in this server", None, 2)
    await world.service.imagine.submit(MEMBER, asked("e6"))


async def test_a_confirmed_job_counts_against_the_cap_when_it_is_queued(world: World) -> None:
    await world.service.admin.images(MANAGER, "3")
    first = await world.service.imagine.submit(MEMBER, asked("e1", "knights --n 2"))
    second = await world.service.imagine.submit(MEMBER, asked("e2", "knights --n 2"))
    assert first.pending and second.pending
    await world.service.imagine.confirm(MEMBER, "e1", ChatTarget("c1"))
    with pytest.raises(UserError) as capped:
        await world.service.imagine.confirm(MEMBER, "e2", ChatTarget("c1"))
    assert capped.value.message == messages.scope_cap_reached(3)


async def test_a_telegram_groups_administrators_set_its_cap_and_private_chats_cannot(world: World) -> None:
    with pytest.raises(UserError) as not_admin:
        await world.service.admin.images(GROUP_MEMBER, "1")
    assert not_admin.value.message == messages.NOT_ADMIN
    assert await world.service.admin.images(GROUP_ADMIN, "1") == messages.image_cap("in this chat", 1, 0)
    await world.service.imagine.submit(GROUP_MEMBER, asked("e1"))
    with pytest.raises(UserError):
        await world.service.imagine.submit(GROUP_ADMIN, asked("e2"))
    with pytest.raises(UserError) as where:
        await world.service.admin.images(ADMIN, "5")
    assert where.value.message == messages.IMAGE_CAP_WHERE
