"""The fake Discord server, driven end to end by a real discord.py client and command tree."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import warnings
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from PIL import Image

from tests.fakes.discord import FakeDiscord, InteractionRecord, SentMessage, Upload, discord_py_endpoints

_AUDIOOP_WARNING = "'audioop' is deprecated and slated for removal in Python 3.13"
with warnings.catch_warnings():
    # discord.py's voice player imports audioop (Python 3.11-3.12). The warning fires while this
    # module is collected, before any pytestmark filter applies, so it is silenced here by message.
    warnings.filterwarnings("ignore", message=re.escape(_AUDIOOP_WARNING), category=DeprecationWarning)
    import discord
    from discord import app_commands

pytestmark = pytest.mark.timeout(30)

FOLLOWUP = "/webhooks/{application_id}/{interaction_token}"
CALLBACK = "/interactions/{interaction_id}/{interaction_token}/callback"
CHANNEL_MESSAGES = "/channels/{channel_id}/messages"


class ProbeBot(discord.Client):
    """A small bot with the shapes Likeness uses; it reports what happened back to the test."""

    def __init__(self) -> None:
        super().__init__(intents=discord.Intents(guilds=True), guild_ready_timeout=0.05)
        self.tree = app_commands.CommandTree(self)
        commands: list[app_commands.Command[Any, Any, Any] | app_commands.Group] = [
            imagine,
            progress,
            admin,
            quota,
            style,
            feedback,
        ]
        for command in commands:
            self.tree.add_command(command)
        # Cleared by a test to hold /imagine between its deferral and its follow-up.
        self.gate = asyncio.Event()
        self.gate.set()
        self.outcomes: dict[int, asyncio.Future[Any]] = {}
        self.clicks: asyncio.Queue[str] = asyncio.Queue()

    def outcome(self, interaction_id: int) -> asyncio.Future[Any]:
        if interaction_id not in self.outcomes:
            self.outcomes[interaction_id] = asyncio.get_running_loop().create_future()
        return self.outcomes[interaction_id]

    async def setup_hook(self) -> None:
        self.add_dynamic_items(JobButton)

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        # The default waits 5 s before every re-IDENTIFY to respect Discord's identify limit.
        return None


class JobButton(
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]],
    template=r"v1:(?P<action>regen|cancel|hide):(?P<job>[0-9a-z]+)",
):
    """A restart-proof button: its whole state lives in the custom_id."""

    def __init__(self, action: str, job: str) -> None:
        button: discord.ui.Button[discord.ui.View] = discord.ui.Button(
            label=action.title(), style=discord.ButtonStyle.primary, custom_id=f"v1:{action}:{job}"
        )
        super().__init__(button)
        self.action, self.job = action, job

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[discord.Client],
        item: discord.ui.Item[Any],
        match: re.Match[str],
    ) -> JobButton:
        return cls(match["action"], match["job"])

    async def callback(self, interaction: discord.Interaction[discord.Client]) -> None:
        bot = interaction.client
        assert isinstance(bot, ProbeBot)
        if self.action == "regen":
            await interaction.response.send_message(f"regenerating {self.job}", ephemeral=True)
        elif self.action == "cancel":
            await interaction.response.edit_message(content=f"cancelled {self.job}", view=None)
        else:
            await interaction.response.defer()
            await interaction.edit_original_response(content=f"hidden {self.job}", attachments=[])
        bot.clicks.put_nowait(f"{self.action}:{self.job}")


class FeedbackModal(discord.ui.Modal, title="Feedback"):
    text: discord.ui.TextInput[FeedbackModal] = discord.ui.TextInput(
        label="What went wrong?", custom_id="feedback:text"
    )

    async def on_submit(self, interaction: discord.Interaction[discord.Client]) -> None:
        await interaction.response.send_message(f"thanks: {self.text.value}", ephemeral=True)


@app_commands.command(description="Turn a face photo into a portrait")
async def imagine(interaction: discord.Interaction[ProbeBot], photo: discord.Attachment, prompt: str) -> None:
    bot = interaction.client
    outcome = bot.outcome(interaction.id)
    try:
        await interaction.response.defer(thinking=True)
        face = await photo.read()
        await bot.gate.wait()
        view = discord.ui.View(timeout=None)
        for action in ("regen", "cancel", "hide"):
            view.add_item(JobButton(action, "abc123"))
        portrait = discord.File(io.BytesIO(face[::-1]), "portrait.png")
        sent = await interaction.followup.send(f"{prompt}: done", file=portrait, view=view, wait=True)
    except discord.HTTPException as exc:
        outcome.set_result(exc)
    else:
        outcome.set_result(sent)


@app_commands.command(description="Show a job's progress privately")
async def progress(interaction: discord.Interaction[ProbeBot]) -> None:
    outcome = interaction.client.outcome(interaction.id)
    await interaction.response.defer(ephemeral=True, thinking=True)
    await interaction.edit_original_response(content="50%")
    result = discord.File(io.BytesIO(b"result"), "result.png")
    await interaction.edit_original_response(content="done", attachments=[result])
    original = await interaction.original_response()
    note = await interaction.followup.send("one more thing", ephemeral=True, wait=True)
    await note.delete()
    outcome.set_result(original)


@app_commands.command(description="Operator tools")
@app_commands.default_permissions(administrator=True)
@app_commands.guild_only()
async def admin(interaction: discord.Interaction[ProbeBot]) -> None:
    # Server admins can override command defaults, so the handler checks again.
    allowed = interaction.permissions.administrator
    await interaction.response.send_message("welcome" if allowed else "administrators only", ephemeral=True)


quota = app_commands.Group(name="quota", description="Credits")


@quota.command(description="Give credits")
async def grant(interaction: discord.Interaction[ProbeBot], user: discord.User, amount: int) -> None:
    await interaction.response.send_message(f"granted {amount} to {user.name}", ephemeral=True)


@app_commands.command(description="Pick a look")
async def style(interaction: discord.Interaction[ProbeBot], name: str) -> None:
    await interaction.response.send_message(f"style {name}")


@style.autocomplete("name")
async def style_choices(interaction: discord.Interaction[ProbeBot], current: str) -> list[app_commands.Choice[str]]:
    return [app_commands.Choice(name=s, value=s) for s in ("noir", "neon", "natural") if s.startswith(current)]


@app_commands.command(description="Tell us what went wrong")
async def feedback(interaction: discord.Interaction[ProbeBot]) -> None:
    await interaction.response.send_modal(FeedbackModal())


@contextlib.asynccontextmanager
async def running_bot(fake: FakeDiscord, *, pin_gateway: bool = False) -> AsyncIterator[ProbeBot]:
    with discord_py_endpoints(fake.api_base, fake.gateway_url, pin_gateway=pin_gateway):
        bot = ProbeBot()
        await bot.login(fake.token)
        connection = asyncio.create_task(bot.connect())
        try:
            await asyncio.wait_for(bot.wait_until_ready(), 5)
            yield bot
        finally:
            await bot.close()
            await connection


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        yield server
    assert server.server_errors == []


@pytest.fixture
async def bot(fake: FakeDiscord) -> AsyncIterator[ProbeBot]:
    async with running_bot(fake) as client:
        yield client


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 120, 90)).save(out, format="PNG")
    return out.getvalue()


async def outcome_of(bot: ProbeBot, interaction: InteractionRecord) -> Any:
    return await asyncio.wait_for(bot.outcome(interaction.id), 5)


async def imagine_result(fake: FakeDiscord, bot: ProbeBot) -> SentMessage:
    ix = await fake.slash(
        fake.alice, fake.general, "imagine", {"prompt": "p"}, attachments={"photo": Upload("f.png", b"f")}
    )
    await outcome_of(bot, ix)
    [message] = await fake.wait_for_followups(ix)
    return message


async def test_connects_over_compressed_gateway_and_caches_the_guild(fake: FakeDiscord, bot: ProbeBot) -> None:
    first = fake.connections[0]
    assert (first.path, first.kind, first.compression) == ("/gateway", "identify", "zlib-stream")
    assert 1 in first.ops  # discord.py heartbeats at once after HELLO and got its ACK
    assert fake.identify_payloads[0]["intents"] == discord.Intents(guilds=True).value
    assert bot.user is not None and bot.user.id == fake.bot_user.id
    assert bot.application_id == fake.application_id
    guild = bot.get_guild(fake.guild.id)
    assert guild is not None
    assert {c.name for c in guild.text_channels} == {"general", "after-dark"}
    nsfw = bot.get_channel(fake.nsfw.id)
    assert isinstance(nsfw, discord.TextChannel) and nsfw.is_nsfw()

    fetched = await bot.fetch_guild(fake.guild.id)
    assert fetched.name == "Likeness Lab" and fetched.approximate_member_count == len(fake.guild.members)
    member = await fetched.fetch_member(fake.admin.id)
    assert [r.name for r in member.roles if not r.is_default()] == ["Admin"]
    channel = await bot.fetch_channel(fake.nsfw.id)
    assert isinstance(channel, discord.TextChannel) and channel.is_nsfw()
    assert {c.id for c in await fetched.fetch_channels()} == {fake.general.id, fake.nsfw.id}

    auth = {"Authorization": f"Bot {fake.token}"}
    async with aiohttp.ClientSession(headers=auth) as session:
        for path in ("/users/@me", "/gateway", "/gateway/bot"):
            async with session.get(fake.api_base + path) as response:
                assert response.headers["Content-Type"] == "application/json"
                body = await response.json()
            assert path == "/users/@me" or body["url"] == fake.gateway_url


async def test_bad_token_and_privileged_intents_are_refused(fake: FakeDiscord) -> None:
    with discord_py_endpoints(fake.api_base, fake.gateway_url):
        client = discord.Client(intents=discord.Intents(guilds=True))
        with pytest.raises(discord.LoginFailure):
            await client.login("wrong-token")
        await client.close()

        greedy = discord.Client(intents=discord.Intents(guilds=True, members=True))
        await greedy.login(fake.token)
        with pytest.raises(discord.PrivilegedIntentsRequired):
            await asyncio.wait_for(greedy.connect(), 5)
        await greedy.close()
    assert fake.connections[-1].close_code == 4014


async def test_auto_sharded_client_connects_where_gateway_bot_points(fake: FakeDiscord) -> None:
    # The configured default gateway is unreachable: the URL must come from GET /gateway/bot.
    with discord_py_endpoints(fake.api_base, "ws://127.0.0.1:9/unused"):
        client = discord.AutoShardedClient(intents=discord.Intents(guilds=True), guild_ready_timeout=0.05)
        await client.login(fake.token)
        connection = asyncio.create_task(client.connect())
        try:
            await asyncio.wait_for(client.wait_until_ready(), 5)
            assert client.shard_count == 1 and client.get_guild(fake.guild.id) is not None
        finally:
            await client.close()
            await connection
    assert fake.identify_payloads[0]["shard"] == [0, 1]
    assert fake.requests_to("GET", "/gateway/bot")


async def test_command_sync_records_definitions(fake: FakeDiscord, bot: ProbeBot) -> None:
    synced = await bot.tree.sync()
    stored = {c["name"]: c for c in fake.global_commands}
    assert set(stored) == {"imagine", "progress", "admin", "quota", "style", "feedback"}
    assert {c.name: c.id for c in synced} == {name: int(c["id"]) for name, c in stored.items()}
    assert str(stored["admin"]["default_member_permissions"]) == "8"
    assert stored["admin"]["contexts"] == [0]
    assert [o["type"] for o in stored["imagine"]["options"]] == [11, 3]

    ix = await fake.slash(fake.alice, fake.general, "style", {"name": "noir"})
    await fake.wait_for_callback(ix)
    assert ix.payload["data"]["id"] == stored["style"]["id"] and "guild_id" not in ix.payload["data"]

    # Guild commands: the interaction then names the guild the command belongs to.
    guild = discord.Object(fake.guild.id)
    bot.tree.copy_global_to(guild=guild)
    await bot.tree.sync(guild=guild)
    assert {c["name"] for c in fake.guild_commands[fake.guild.id]} == set(stored)
    ix = await fake.slash(fake.alice, fake.general, "style", {"name": "neon"})
    callback = await fake.wait_for_callback(ix)
    assert ix.payload["data"]["guild_id"] == str(fake.guild.id)
    assert callback.data["content"] == "style neon"


async def test_slash_with_attachment_defers_then_follows_up_with_file_and_buttons(
    fake: FakeDiscord, bot: ProbeBot
) -> None:
    face = png(4, 3)
    ix = await fake.slash(
        fake.alice,
        fake.general,
        "imagine",
        {"prompt": "noir"},
        attachments={"photo": Upload("face.png", face)},
    )
    sent = await outcome_of(bot, ix)

    resolved = next(iter(ix.payload["data"]["resolved"]["attachments"].values()))
    assert (resolved["width"], resolved["height"], resolved["content_type"]) == (4, 3, "image/png")
    [defer] = fake.requests_to("POST", CALLBACK)
    assert defer.query["with_response"] == "1" and defer.json == {"type": 5}
    assert ix.callback_type == 5 and not ix.ephemeral

    # The first follow-up after a deferral becomes the "thinking" message itself.
    [result] = ix.followups
    assert result is ix.original and not result.loading
    assert result.content == "noir: done"
    [portrait] = result.attachments
    assert (portrait.filename, portrait.content_type, portrait.data) == (
        "portrait.png",
        "image/png",
        face[::-1],
    )
    assert result.custom_ids == ["v1:regen:abc123", "v1:cancel:abc123", "v1:hide:abc123"]
    [upload] = fake.requests_to("POST", FOLLOWUP)
    assert upload.query["wait"] == "1" and [f.field for f in upload.files] == ["files[0]"]

    assert isinstance(sent, discord.WebhookMessage) and sent.id == result.id
    assert await sent.attachments[0].read() == face[::-1]
    fake.expire_attachment_urls()
    with pytest.raises(discord.NotFound):
        await sent.attachments[0].read()


async def test_ephemeral_progress_edits_fetch_and_delete_through_the_token(fake: FakeDiscord, bot: ProbeBot) -> None:
    ix = await fake.slash(fake.alice, fake.general, "progress")
    original = await outcome_of(bot, ix)
    assert ix.callback_type == 5 and ix.ephemeral
    message = ix.original
    assert message is not None and message.ephemeral and not message.loading
    assert [edit["content"] for edit in message.edits] == ["50%", "done"]
    assert (message.content, [a.data for a in message.attachments]) == ("done", [b"result"])
    assert message.attachments[0].ephemeral
    assert isinstance(original, discord.InteractionMessage) and original.content == "done"
    # The deferred message was already edited, so the follow-up is a message of its own.
    [note] = ix.followups
    assert note is not message and note.ephemeral and note.deleted
    assert ix.messages == [message, note]


async def test_button_click_after_restart_reaches_dynamic_item(fake: FakeDiscord) -> None:
    async with running_bot(fake) as first:
        message = await imagine_result(fake, first)

    # A new client that never saw the message still routes the click by custom_id.
    async with running_bot(fake) as second:
        click = await fake.click(fake.admin, message, "v1:regen:abc123")
        assert await asyncio.wait_for(second.clicks.get(), 5) == "regen:abc123"
        callback = await fake.wait_for_callback(click)
    assert click.payload["data"] == {"custom_id": "v1:regen:abc123", "component_type": 2}
    assert click.payload["message"]["id"] == str(message.id)
    assert callback.type == 4 and click.ephemeral
    assert callback.message is not None and callback.message.content == "regenerating abc123"
    with pytest.raises(ValueError, match="no component"):
        await fake.click(fake.admin, message, "v1:regen:other")


async def test_button_updates_its_own_message(fake: FakeDiscord, bot: ProbeBot) -> None:
    message = await imagine_result(fake, bot)

    hide = await fake.click(fake.alice, message, "v1:hide:abc123")
    await fake.wait_for(lambda: message.content == "hidden abc123")
    assert hide.callback_type == 6 and hide.original is message and message.attachments == []

    cancel = await fake.click(fake.alice, message, "v1:cancel:abc123")
    callback = await fake.wait_for_callback(cancel)
    assert callback.type == 7 and callback.message is message
    assert (message.content, message.components) == ("cancelled abc123", [])
    assert len(message.edits) == 3  # the follow-up that filled the deferral, then both buttons


async def test_rate_limited_followup_is_retried(fake: FakeDiscord, bot: ProbeBot) -> None:
    fake.rate_limit("POST", FOLLOWUP, times=1, retry_after=0.05)
    await imagine_result(fake, bot)
    first, second = fake.requests_to("POST", FOLLOWUP)
    assert (first.status, second.status) == (429, 200)
    assert second.at - first.at >= 0.05


async def test_rate_limit_without_via_is_not_retried(fake: FakeDiscord, bot: ProbeBot) -> None:
    fake.rate_limit("POST", FOLLOWUP, times=1, cloudflare=True)
    ix = await fake.slash(
        fake.alice, fake.general, "imagine", {"prompt": "p"}, attachments={"photo": Upload("f.png", b"f")}
    )
    error = await outcome_of(bot, ix)
    assert type(error) is discord.HTTPException and error.status == 429
    assert len(fake.requests_to("POST", FOLLOWUP)) == 1


async def test_followup_on_expired_token_raises(fake: FakeDiscord, bot: ProbeBot) -> None:
    bot.gate.clear()
    ix = await fake.slash(
        fake.alice, fake.general, "imagine", {"prompt": "p"}, attachments={"photo": Upload("f.png", b"f")}
    )
    await fake.wait_for_callback(ix)
    fake.expire_token(ix)
    bot.gate.set()
    error = await outcome_of(bot, ix)
    # Not NotFound or Forbidden: a bare HTTPException with the status and code to tell it apart.
    assert type(error) is discord.HTTPException
    assert (error.status, error.code) == (401, 50027)


async def test_late_first_response_is_unknown_interaction(fake: FakeDiscord, bot: ProbeBot) -> None:
    fake.response_deadline = 0.0
    ix = await fake.slash(
        fake.alice, fake.general, "imagine", {"prompt": "p"}, attachments={"photo": Upload("f.png", b"f")}
    )
    error = await outcome_of(bot, ix)
    assert isinstance(error, discord.NotFound) and error.code == 10062
    assert ix.callbacks == []


async def test_channel_posts_edits_and_refusals(fake: FakeDiscord, bot: ProbeBot) -> None:
    fake.deny_channel(fake.general)
    general = bot.get_channel(fake.general.id)
    assert isinstance(general, discord.TextChannel)
    with pytest.raises(discord.Forbidden) as denied:
        await general.send("result")
    assert denied.value.code == 50013
    # Interactions from there tell the bot up front that it cannot post files.
    ix = await fake.slash(fake.alice, fake.general, "style", {"name": "noir"})
    await fake.wait_for_callback(ix)
    assert not discord.Permissions(int(ix.payload["app_permissions"])).attach_files

    nsfw = bot.get_channel(fake.nsfw.id)
    assert isinstance(nsfw, discord.TextChannel)
    fake.rate_limit("POST", CHANNEL_MESSAGES, times=2, retry_after=0.02)
    message = await nsfw.send("result", file=discord.File(io.BytesIO(b"img"), "out.png"))
    assert [r.status for r in fake.requests_to("POST", CHANNEL_MESSAGES)][-3:] == [429, 429, 200]
    await message.edit(content="result (edited)")
    recorded = await fake.wait_for_message(lambda m: m.channel_id == fake.nsfw.id)
    assert recorded.content == "result (edited)"
    assert [edit["content"] for edit in recorded.edits] == ["result (edited)"]
    assert [(a.filename, a.data) for a in recorded.attachments] == [("out.png", b"img")]

    with pytest.raises(discord.HTTPException) as too_long:
        await nsfw.send("x" * 2001)
    assert (too_long.value.status, too_long.value.code) == (400, 50035)
    with pytest.raises(discord.HTTPException) as too_big:
        await nsfw.send(file=discord.File(io.BytesIO(bytes(10 * 1024 * 1024 + 1)), "big.png"))
    assert (too_big.value.status, too_big.value.code) == (413, 40005)
    fake.fail("POST", CHANNEL_MESSAGES, status=403, code=50001, message="Missing Access")
    with pytest.raises(discord.Forbidden) as no_access:
        await nsfw.send("again")
    assert no_access.value.code == 50001
    assert len(fake.channel_messages(fake.nsfw)) == 1


async def test_direct_messages(fake: FakeDiscord, bot: ProbeBot) -> None:
    user = await bot.fetch_user(fake.alice.id)
    await user.send("your portrait", file=discord.File(io.BytesIO(b"pic"), "p.png"))
    [dm] = fake.dm_messages(fake.alice)
    assert dm.content == "your portrait" and dm.attachments[0].data == b"pic"

    fake.close_dms(fake.admin)
    closed = await bot.fetch_user(fake.admin.id)
    with pytest.raises(discord.Forbidden) as refused:
        await closed.send("hello")
    assert refused.value.code == 50007

    # Commands work from the DM too: the interaction carries a user instead of a member.
    ix = await fake.slash(fake.alice, fake.dm_channel(fake.alice), "style", {"name": "neon"})
    callback = await fake.wait_for_callback(ix)
    assert "member" not in ix.payload and ix.payload["context"] == 1
    assert callback.message is not None and callback.message.content == "style neon"


async def test_member_permissions_and_subcommands(fake: FakeDiscord, bot: ProbeBot) -> None:
    plain = await fake.slash(fake.alice, fake.general, "admin")
    boss = await fake.slash(fake.admin, fake.general, "admin")
    replies = [(await fake.wait_for_callback(ix)).data["content"] for ix in (plain, boss)]
    assert replies == ["administrators only", "welcome"]
    assert plain.ephemeral and boss.ephemeral

    ix = await fake.slash(fake.admin, fake.general, "quota grant", {"user": fake.alice, "amount": 5})
    callback = await fake.wait_for_callback(ix)
    assert callback.data["content"] == "granted 5 to alice"
    [group] = ix.payload["data"]["options"]
    assert (group["name"], group["type"], [o["name"] for o in group["options"]]) == (
        "grant",
        1,
        ["user", "amount"],
    )


async def test_autocomplete_and_modal(fake: FakeDiscord, bot: ProbeBot) -> None:
    typing = await fake.autocomplete(fake.alice, fake.general, "style", {"name": "ne"}, focused="name")
    await fake.wait_for_callback(typing)
    assert typing.callback_type == 8 and typing.choices == [{"name": "neon", "value": "neon"}]

    opened = await fake.slash(fake.alice, fake.general, "feedback")
    modal = await fake.wait_for_callback(opened)
    assert modal.type == 9 and modal.data["title"] == "Feedback"
    submitted = await fake.submit_modal(fake.alice, opened, {"feedback:text": "too dark"})
    reply = await fake.wait_for_callback(submitted)
    assert reply.data["content"] == "thanks: too dark" and submitted.ephemeral


async def test_resumes_on_the_resume_url_and_replays_missed_events(fake: FakeDiscord, bot: ProbeBot) -> None:
    await fake.reconnect()
    resumed = await fake.wait_for(lambda: next((c for c in fake.connections if c.kind == "resume"), None))
    assert resumed.path == "/gateway/resume" and fake.connections[0].closed

    # Dropped socket: the interaction sent meanwhile is replayed after RESUME.
    await fake.disconnect()
    ix = await fake.slash(fake.alice, fake.general, "admin")
    await fake.wait_for_callback(ix)
    resumes = [c for c in fake.connections if c.kind == "resume"]
    assert [c.path for c in resumes] == ["/gateway/resume", "/gateway/resume"]
    assert len(fake.identify_payloads) == 1


async def test_invalid_session_identifies_again_on_the_default_gateway(fake: FakeDiscord, bot: ProbeBot) -> None:
    # discord.py identifies again where its last connection was opened; with no resume yet,
    # that is the default gateway.
    await fake.invalidate_session()
    fresh = await fake.wait_for(lambda: fake.connections[-1] if len(fake.identify_payloads) == 2 else None)
    assert (fresh.path, fresh.kind) == ("/gateway", "identify")
    ix = await fake.slash(fake.alice, fake.general, "admin")
    await fake.wait_for_callback(ix)


async def test_pinned_gateway_keeps_resumes_on_the_configured_url(fake: FakeDiscord) -> None:
    async with running_bot(fake, pin_gateway=True):
        await fake.reconnect()
        resumed = await fake.wait_for(lambda: next((c for c in fake.connections if c.kind == "resume"), None))
        assert resumed.path == "/gateway"
        ix = await fake.slash(fake.alice, fake.general, "admin")
        await fake.wait_for_callback(ix)


async def test_misuse_fails_loudly(fake: FakeDiscord) -> None:
    with pytest.raises(ValueError, match="no route"):
        fake.rate_limit("POST", "/webhooks/{id}/{token}")
    with pytest.raises(TimeoutError, match="condition not met"):
        await fake.wait_for(lambda: False, timeout=0.01)
    stranger = fake.add_user("stranger", member=False)
    with pytest.raises(ValueError, match="not a member"):
        await fake.slash(stranger, fake.general, "style", {"name": "noir"})
