"""Admin use cases: authority checked by the service, every change audited, channels per guild."""

from __future__ import annotations

import pytest

from bot import messages
from bot.errors import UserError
from bot.service.actors import SHELL_ACTOR, Actor
from bot.service.imagine import ImagineInput
from tests.bot.service.conftest import (
    ADMIN,
    ANN,
    BOB,
    ELSEWHERE,
    GENERAL,
    GUILD,
    MEMBER,
    MODERATOR,
    WELCOME,
    ChatTarget,
    World,
    audit_of,
    face_photo,
)


async def test_only_admins_may_and_the_refusal_changes_nothing(world: World) -> None:
    admin = world.service.admin
    for refused in (
        admin.grant(ANN, BOB.user_id, "5"),
        admin.limit(ANN, "default", "1"),
        admin.ban(ANN, BOB.user_id),
        admin.stats(ANN),
        admin.pause(ANN),
    ):
        with pytest.raises(UserError) as error:
            await refused
        assert error.value.message == messages.NOT_ADMIN
    with pytest.raises(UserError) as error:
        await admin.channels(MEMBER, "add", GENERAL)
    assert error.value.message == messages.NOT_SERVER_MANAGER
    # An admin role counts inside the home guild only, whatever Discord lets through; the shell always may.
    outside = Actor("discord", "303", "Ed", chat_id="55", roles=(MODERATOR.roles[0],))
    assert not admin.is_admin(outside) and admin.is_admin(MODERATOR) and admin.is_admin(SHELL_ACTOR)
    assert await world.db.read(audit_of, target=f"telegram:{BOB.user_id}") == []


async def test_grant_limit_and_ban_change_the_user_and_are_audited(world: World) -> None:
    admin = world.service.admin
    assert await admin.grant(ADMIN, BOB.user_id, "5") == messages.granted(f"telegram:{BOB.user_id}", 5, WELCOME + 5)
    assert await admin.grant(ADMIN, f"discord:{MEMBER.user_id}", "-3") == messages.granted(
        f"discord:{MEMBER.user_id}", -3, WELCOME - 3
    )
    assert await admin.limit(ADMIN, f"@{BOB.user_id}", "4") == messages.limit_set(f"telegram:{BOB.user_id}", 4)
    assert await admin.ban(ADMIN, BOB.user_id, "spam") == messages.banned(f"telegram:{BOB.user_id}")
    bob = await world.user(BOB)
    assert (bob.credits, bob.daily_jobs_limit, bob.banned, bob.ban_reason) == (WELCOME + 5, 4, True, "spam")
    assert await admin.ban(ADMIN, BOB.user_id, banned=False) == messages.unbanned(f"telegram:{BOB.user_id}")
    assert not (await world.user(BOB)).banned

    audit = await world.db.read(audit_of, target=f"telegram:{BOB.user_id}")
    assert [(actor, action) for actor, action, _ in audit] == [
        (ADMIN.key, "grant"),
        (ADMIN.key, "limit"),
        (ADMIN.key, "ban"),
        (ADMIN.key, "unban"),
    ]
    assert audit[0][2] == {"amount": 5} and audit[2][2] == {"reason": "spam"}


@pytest.mark.parametrize(
    ("ref", "amount", "message"),
    [
        ("slack:5", "1", messages.BAD_USER_REF),
        ("bob", "1", messages.BAD_USER_REF),
        ("5", "lots", messages.BAD_NUMBER.format(what="Credits", value="lots")),
    ],
)
async def test_bad_arguments_are_explained(world: World, ref: str, amount: str, message: str) -> None:
    with pytest.raises(UserError) as refused:
        await world.service.admin.grant(ADMIN, ref, amount)
    assert refused.value.message == message


async def test_stats_count_todays_jobs(world: World) -> None:
    given = ImagineInput(event_id="e1", text="a knight", reply_target=ChatTarget("c1"), photos=(face_photo(),))
    await world.service.imagine.submit(ANN, given)
    await world.run_jobs()
    text = await world.service.admin.stats(ADMIN)
    assert text.startswith("Jobs today: 1 (succeeded 1)\nSuccess rate: 100%")


async def test_pause_covers_the_guild_it_was_given_in_or_everywhere(world: World) -> None:
    admin = world.service.admin
    assert await admin.pause(MODERATOR, "upgrade") == messages.paused("upgrade")
    assert await world.db.read(audit_of, target=f"discord:guild:{GUILD}") == [
        (MODERATOR.key, "pause", {"reason": "upgrade"})
    ]
    assert await admin.pause(ADMIN, "everyone") == messages.paused("everyone")
    given = ImagineInput(event_id="e1", text="a knight", reply_target=ChatTarget("c1"), photos=(face_photo(),))
    with pytest.raises(UserError) as paused:
        await world.service.imagine.submit(ANN, given)
    assert paused.value.message == messages.paused_for_users("everyone")
    assert await admin.pause(ADMIN, paused=False) == messages.RESUMED
    assert (await world.service.imagine.submit(ANN, given)).job_id == "e1"


async def test_channels_are_listed_added_removed_and_cleared_per_guild(world: World) -> None:
    admin = world.service.admin
    assert await admin.channels(MODERATOR, "list", GENERAL) == ()
    assert await admin.channels(MODERATOR, "add", GENERAL) == (GENERAL,)
    assert await admin.channels(MODERATOR, "add", ELSEWHERE) == (GENERAL, ELSEWHERE)
    assert await admin.channels(MODERATOR, "add", GENERAL) == (GENERAL, ELSEWHERE)  # once each
    assert await admin.channels(MODERATOR, "remove", GENERAL) == (ELSEWHERE,)
    assert await admin.channels(MODERATOR, "list", GENERAL) == (ELSEWHERE,)
    assert await admin.channels(MODERATOR, "clear", GENERAL) == ()

    audit = await world.db.read(audit_of, target=f"discord:guild:{GUILD}")
    assert [(action, detail["channels"]) for _, action, detail in audit] == [
        ("channels-add", [GENERAL]),
        ("channels-add", [GENERAL, ELSEWHERE]),
        ("channels-add", [GENERAL, ELSEWHERE]),
        ("channels-remove", [ELSEWHERE]),
        ("channels-clear", []),
    ]

    # Outside a guild there are no channels to choose, even for a bot admin.
    with pytest.raises(UserError) as direct:
        await admin.channels(ADMIN, "add", "1")
    assert direct.value.message == messages.DISCORD_SERVER_ONLY
