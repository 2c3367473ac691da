"""Who is a bot admin and who manages only a server's settings; the settings that name the admin role."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from bot import messages
from bot.errors import UserError
from bot.service.actors import SHELL_ACTOR, Actor
from bot.settings import SettingsError, load_settings
from storage import tables as t
from tests.bot.service.conftest import ADMIN, ADMIN_ROLE, ANN, BOB, GENERAL, GUILD, MEMBER, MODERATOR, World

STRANGER_GUILD = "777"
# A server owner anywhere: Discord reports Manage Server, and they may hold any role they made.
OWNER_ELSEWHERE = Actor(
    "discord", "404", "Mal", chat_id="778", guild_id=STRANGER_GUILD, roles=(ADMIN_ROLE, "Admin"), manages_guild=True
)
MANAGER_AT_HOME = Actor("discord", "405", "Meg", chat_id=GENERAL, guild_id=GUILD, manages_guild=True)


def test_bot_admins_are_the_shell_the_listed_ids_and_the_role_id_in_a_home_server(world: World) -> None:
    admin = world.service.admin
    assert admin.is_admin(SHELL_ACTOR) and admin.is_admin(ADMIN) and admin.is_admin(MODERATOR)
    assert not admin.is_admin(OWNER_ELSEWHERE)  # the same role id, but not in a home server
    assert not admin.is_admin(MANAGER_AT_HOME)  # Manage Server makes no bot admin
    assert not admin.is_admin(Actor("discord", "406", "Ned", guild_id=GUILD, roles=("Admin",)))  # a name is nothing
    # A Telegram user with a numerically equal id is not the Discord admin.
    assert not admin.is_admin(Actor("telegram", MODERATOR.user_id, "Di", roles=(ADMIN_ROLE,)))


@pytest.mark.parametrize("actor", [OWNER_ELSEWHERE, MANAGER_AT_HOME], ids=["owner-elsewhere", "manager-at-home"])
async def test_a_server_manager_may_not_touch_users_limits_or_stats(world: World, actor: Actor) -> None:
    admin = world.service.admin
    for refused in (
        admin.grant(actor, f"discord:{actor.user_id}", "1000"),
        admin.grant(actor, f"telegram:{BOB.user_id}", "-5"),
        admin.limit(actor, "default", "0"),
        admin.limit(actor, f"telegram:{ANN.user_id}", "0"),
        admin.ban(actor, f"telegram:{ANN.user_id}", "mine"),
        admin.ban(actor, f"telegram:{ANN.user_id}", banned=False),
        admin.stats(actor),
    ):
        with pytest.raises(UserError) as error:
            await refused
        assert error.value.message == messages.NOT_ADMIN
    assert await world.db.read(_audit_count) == 0


async def test_a_server_manager_changes_that_server_only(world: World) -> None:
    admin = world.service.admin
    assert await admin.channels(OWNER_ELSEWHERE, "add", "778") == ("778",)
    assert await admin.pause(OWNER_ELSEWHERE, "closed") == messages.paused("closed")
    # Each server has its own settings: the stranger's changes are not the home server's.
    assert await admin.channels(MODERATOR, "list", GENERAL) == ()
    assert await admin.channels(MANAGER_AT_HOME, "add", GENERAL) == (GENERAL,)
    assert await admin.pause(MANAGER_AT_HOME, paused=False) == messages.RESUMED
    assert await world.db.read(_audit_scopes) == [
        ("channels-add", f"discord:guild:{STRANGER_GUILD}"),
        ("pause", f"discord:guild:{STRANGER_GUILD}"),
        ("channels-add", f"discord:guild:{GUILD}"),
        ("resume", f"discord:guild:{GUILD}"),
    ]
    with pytest.raises(UserError) as error:
        await admin.pause(MEMBER, "no")
    assert error.value.message == messages.NOT_SERVER_MANAGER


def _audit_scopes(*, session: Connection) -> list[tuple[str, str]]:
    rows = session.execute(select(t.audit_log.c.action, t.audit_log.c.target).order_by(t.audit_log.c.id))
    return [(str(action), str(target)) for action, target in rows]


def _audit_count(*, session: Connection) -> int:
    return int(session.execute(select(func.count()).select_from(t.audit_log)).scalar_one())


def test_the_admin_role_is_an_id_tied_to_home_servers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no .env of the developer's
    monkeypatch.setenv("LIKENESS_DISCORD__ADMIN_GUILDS", "111, 222")
    monkeypatch.setenv("LIKENESS_DISCORD__ADMIN_ROLE", "333")
    discord = load_settings().discord
    assert (discord.admin_guilds, discord.admin_role) == (["111", "222"], "333")

    monkeypatch.setenv("LIKENESS_DISCORD__ADMIN_ROLE", "Admin")
    with pytest.raises(SettingsError, match=r"^LIKENESS_DISCORD__ADMIN_ROLE: must be the admin role's id"):
        load_settings()
    monkeypatch.setenv("LIKENESS_DISCORD__ADMIN_ROLE", "333")
    monkeypatch.delenv("LIKENESS_DISCORD__ADMIN_GUILDS")
    with pytest.raises(SettingsError, match=r"^LIKENESS_DISCORD__ADMIN_ROLE: .*LIKENESS_DISCORD__ADMIN_GUILDS"):
        load_settings()
    monkeypatch.setenv("LIKENESS_DISCORD__ADMIN_GUILDS", "home")
    with pytest.raises(SettingsError, match=r"^LIKENESS_DISCORD__ADMIN_GUILDS: 'home' is not a server id"):
        load_settings()
