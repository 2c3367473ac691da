"""One bot application's world on the fake Discord, and everything recorded while a test runs."""

from __future__ import annotations

import asyncio
import hashlib
import io
import mimetypes
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from tests.fakes.discord.messages import apply_payload
from tests.fakes.discord.models import (
    ADMINISTRATOR,
    ATTACH_FILES,
    BOT_PERMISSIONS,
    DENIED_BY_FAULT,
    DM,
    EMBED_LINKS,
    EPHEMERAL,
    EVERYONE_PERMISSIONS,
    GUILD_TEXT,
    READ_MESSAGE_HISTORY,
    SEND_MESSAGES,
    UPLOAD_LIMITS,
    VIEW_CHANNEL,
    FakeAttachment,
    FakeChannel,
    FakeGuild,
    FakeMember,
    FakeRole,
    FakeUser,
    InteractionRecord,
    Json,
    SentMessage,
    Snowflakes,
)
from tests.fakes.discord.monetization import Monetization
from tests.fakes.discord.protocol import ApiError, FilePart, RequestRecord

T = TypeVar("T")

# Where the fake serves the REST API (the version discord.py speaks) and the gateway.
API_PREFIX = "/api/v10"
GATEWAY_PATH = "/gateway"
RESUME_GATEWAY_PATH = "/gateway/resume"


def image_size(data: bytes) -> tuple[int, int] | None:
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            return int(width), int(height)
    except Exception:  # not an image Pillow knows: Discord then sends no dimensions either
        return None


class DiscordState:
    """The guild, its users and channels, the bot's messages, interactions and commands, and the request log."""

    def __init__(
        self,
        *,
        token: str,
        app_name: str,
        heartbeat_interval: float,
        token_lifetime: float,
        response_deadline: float | None,
        privileged_intents: int,
    ) -> None:
        self.token = token
        self.heartbeat_interval = heartbeat_interval
        self.token_lifetime = token_lifetime
        # Discord forgets an interaction that got no callback within 3 s (None: never).
        self.response_deadline = response_deadline
        self.privileged_intents = privileged_intents
        self.ids = Snowflakes()
        self.application_id = self.ids.next()
        self.application_flags = 0
        self.bot_user = FakeUser(self.application_id, app_name, bot=True)
        self.owner = FakeUser(self.ids.next(), "owner")
        self.users: dict[int, FakeUser] = {u.id: u for u in (self.bot_user, self.owner)}
        self.guilds: dict[int, FakeGuild] = {}
        self.channels: dict[int, FakeChannel] = {}
        self.port = 0

        guild_id = self.ids.next()
        everyone = FakeRole(guild_id, "@everyone", EVERYONE_PERMISSIONS)
        self.admin_role = FakeRole(self.ids.next(), "Admin", ADMINISTRATOR, position=2)
        bot_role = FakeRole(self.ids.next(), app_name, BOT_PERMISSIONS, position=1, managed=True)
        self.guild = FakeGuild(guild_id, "Likeness Lab", self.owner.id, [everyone, self.admin_role, bot_role])
        self.guilds[guild_id] = self.guild
        self.guild.members[self.bot_user.id] = FakeMember(self.bot_user, [bot_role])
        self.guild.members[self.owner.id] = FakeMember(self.owner)
        self.general = self.add_channel("general")
        self.nsfw = self.add_channel("after-dark", nsfw=True)
        self.alice = self.add_user("alice")
        self.admin = self.add_user("admin", roles=[self.admin_role])

        # Records.
        self.requests: list[RequestRecord] = []
        self.interactions: dict[int, InteractionRecord] = {}
        self.messages: dict[int, SentMessage] = {}
        self.global_commands: list[Json] = []
        self.guild_commands: dict[int, list[Json]] = {}
        # Requests the fake could not serve; a test should expect this to stay empty.
        self.server_errors: list[str] = []

        self.by_token: dict[str, InteractionRecord] = {}
        self.command_ids: dict[tuple[int | None, str], int] = {}
        self.cdn: dict[int, FakeAttachment] = {}
        self.expired_cdn: set[int] = set()
        self.denied_channels: set[int] = set()
        self.closed_dms: set[int] = set()
        self.monetization = Monetization(self.application_id, self.ids)
        self._changed = asyncio.Condition()

    # ------------------------------------------------------------------ addresses

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        """The value for ``discord.http.Route.BASE``."""
        return self.base_url + API_PREFIX

    @property
    def gateway_url(self) -> str:
        """The value for ``DiscordWebSocket.DEFAULT_GATEWAY``; also what GET /gateway returns."""
        return f"ws://127.0.0.1:{self.port}{GATEWAY_PATH}"

    @property
    def resume_gateway_url(self) -> str:
        """Sent in READY; a different path so tests can tell resumes from fresh connects."""
        return f"ws://127.0.0.1:{self.port}{RESUME_GATEWAY_PATH}"

    # ------------------------------------------------------------------ world setup

    def add_user(
        self,
        username: str,
        *,
        member: bool = True,
        roles: Sequence[FakeRole] = (),
        permissions: int | None = None,
        guild: FakeGuild | None = None,
    ) -> FakeUser:
        """A user, by default a member of the guild; ``permissions`` overrides what roles grant."""
        user = FakeUser(self.ids.next(), username, global_name=username.title())
        self.users[user.id] = user
        if member:
            (guild or self.guild).members[user.id] = FakeMember(user, list(roles), permissions)
        return user

    def add_guild(self, name: str, owner: FakeUser, *, premium_tier: int = 0) -> FakeGuild:
        """Another server the bot was added to, owned by ``owner`` (who holds every permission there);
        add it before the bot connects so it is in GUILD_CREATE."""
        guild_id = self.ids.next()
        everyone = FakeRole(guild_id, "@everyone", EVERYONE_PERMISSIONS)
        bot_role = FakeRole(self.ids.next(), self.bot_user.username, BOT_PERMISSIONS, position=1, managed=True)
        guild = FakeGuild(guild_id, name, owner.id, [everyone, bot_role], premium_tier=premium_tier)
        guild.members[self.bot_user.id] = FakeMember(self.bot_user, [bot_role])
        guild.members[owner.id] = FakeMember(owner)
        self.guilds[guild_id] = guild
        return guild

    def add_role(self, guild: FakeGuild, name: str, permissions: int, *, members: Sequence[FakeUser] = ()) -> FakeRole:
        """A role any server owner may create, with any name; ``members`` get it."""
        role = FakeRole(self.ids.next(), name, permissions, position=len(guild.roles))
        guild.roles.append(role)
        for user in members:
            guild.members[user.id].roles.append(role)
        return role

    def add_channel(self, name: str, *, nsfw: bool = False, guild: FakeGuild | None = None) -> FakeChannel:
        """A guild text channel; add it before the bot connects so it is in GUILD_CREATE."""
        guild = guild or self.guild
        channel = FakeChannel(self.ids.next(), GUILD_TEXT, name, guild.id, nsfw, position=len(guild.channels))
        guild.channels.append(channel)
        self.channels[channel.id] = channel
        return channel

    def member(self, user: FakeUser, guild: FakeGuild | None = None) -> FakeMember:
        return (guild or self.guild).members[user.id]

    def dm_channel(self, user: FakeUser) -> FakeChannel:
        """The DM channel between the bot and ``user``, created on first use like Discord does."""
        for channel in self.channels.values():
            if channel.recipient is user:
                return channel
        channel = FakeChannel(self.ids.next(), DM, recipient=user)
        self.channels[channel.id] = channel
        return channel

    # ------------------------------------------------------------------ waiting

    async def notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(
        self,
        predicate: Callable[[], T | None],
        timeout: float = 5.0,  # noqa: ASYNC109 - every wait in a test needs its own bound
    ) -> T:
        """Wait until ``predicate()`` is truthy, rechecking on every new record; return its value."""

        async def until() -> T:
            async with self._changed:
                while True:
                    result = predicate()
                    if result:
                        return result
                    await self._changed.wait()

        try:
            return await asyncio.wait_for(until(), timeout)
        except TimeoutError:
            recent = [f"{r.method} {r.path} -> {r.status}" for r in self.requests[-8:]]
            raise TimeoutError(
                f"condition not met within {timeout}s; recent requests: {recent}; server errors: {self.server_errors}"
            ) from None

    # ------------------------------------------------------------------ permissions

    def app_permissions(self, channel: FakeChannel) -> int:
        if channel.guild_id is None:
            return VIEW_CHANNEL | SEND_MESSAGES | EMBED_LINKS | ATTACH_FILES | READ_MESSAGE_HISTORY
        value = self.guilds[channel.guild_id].permissions_of(self.bot_user.id)
        if channel.id in self.denied_channels:
            value &= ~DENIED_BY_FAULT
        return value

    def size_limit(self, channel: FakeChannel) -> int:
        return self.guilds[channel.guild_id].attachment_size_limit if channel.guild_id else UPLOAD_LIMITS[0]

    def check_can_send(self, channel: FakeChannel) -> None:
        if channel.recipient is not None and channel.recipient.id in self.closed_dms:
            raise ApiError(403, 50007, "Cannot send messages to this user")
        if channel.id in self.denied_channels:
            raise ApiError(403, 50013, "Missing Permissions")

    # ------------------------------------------------------------------ attachments and messages

    def attachment(
        self,
        channel_id: int,
        filename: str,
        data: bytes,
        content_type: str | None,
        description: str | None = None,
    ) -> FakeAttachment:
        """A file on the CDN, behind a signed URL as Discord hands them out."""
        attachment_id = self.ids.next()
        expires = int(time.time()) + 86400
        signature = hashlib.sha256(f"{attachment_id}:{expires}".encode()).hexdigest()
        url = (
            f"{self.base_url}/attachments/{channel_id}/{attachment_id}/{filename}"
            f"?ex={expires:x}&is={int(time.time()):x}&hm={signature}&"
        )
        size = image_size(data)
        attachment = FakeAttachment(
            id=attachment_id,
            filename=filename,
            data=data,
            url=url,
            content_type=content_type or mimetypes.guess_type(filename)[0],
            description=description,
            width=size[0] if size else None,
            height=size[1] if size else None,
        )
        self.cdn[attachment_id] = attachment
        return attachment

    def apply(
        self,
        message: SentMessage,
        payload: Json,
        files: Sequence[FilePart],
        size_limit: int,
        *,
        creating: bool,
    ) -> None:
        """Validate like Discord does, then write ``payload`` (and uploads) into ``message``."""

        def attach(filename: str, part: FilePart, description: str | None) -> FakeAttachment:
            # Discord guesses the type from the name; discord.py labels every part application/octet-stream.
            guessed = mimetypes.guess_type(filename)[0]
            return self.attachment(message.channel_id, filename, part.data, guessed or part.content_type, description)

        apply_payload(message, payload, files, size_limit, creating=creating, attach=attach)

    def new_message(
        self,
        channel: FakeChannel,
        payload: Json,
        files: Sequence[FilePart],
        size_limit: int,
        *,
        message_type: int = 0,
        interaction: InteractionRecord | None = None,
    ) -> SentMessage:
        message = SentMessage(
            id=self.ids.next(),
            channel_id=channel.id,
            author=self.bot_user,
            guild_id=channel.guild_id,
            type=message_type,
            interaction=interaction,
            webhook_id=self.application_id if interaction is not None else None,
        )
        if interaction is None:
            # Only interaction responses can be ephemeral.
            payload = {**payload, "flags": int(payload.get("flags") or 0) & ~EPHEMERAL}
        self.apply(message, payload, files, size_limit, creating=True)
        self.messages[message.id] = message
        return message
