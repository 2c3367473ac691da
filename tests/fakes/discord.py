"""Fake Discord REST API, CDN and gateway on 127.0.0.1, spoken to by the real discord.py."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import mimetypes
import re
import secrets
import socket
import time
import zlib
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiohttp import BodyPartReader, WSMsgType, web

T = TypeVar("T")
Json = dict[str, Any]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

API_PREFIX = "/api/v10"
GATEWAY_PATH = "/gateway"
RESUME_GATEWAY_PATH = "/gateway/resume"
_DISCORD_EPOCH_MS = 1_420_070_400_000
MIB = 1024 * 1024

# Message flags.
SUPPRESS_EMBEDS = 1 << 2
EPHEMERAL = 1 << 6
LOADING = 1 << 7
SUPPRESS_NOTIFICATIONS = 1 << 12
IS_COMPONENTS_V2 = 1 << 15

# Permission bits.
ADMINISTRATOR = 1 << 3
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
EMBED_LINKS = 1 << 14
ATTACH_FILES = 1 << 15
READ_MESSAGE_HISTORY = 1 << 16
USE_APPLICATION_COMMANDS = 1 << 31
ALL_PERMISSIONS = (1 << 51) - 1
EVERYONE_PERMISSIONS = VIEW_CHANNEL | SEND_MESSAGES | EMBED_LINKS | ATTACH_FILES | READ_MESSAGE_HISTORY
EVERYONE_PERMISSIONS |= USE_APPLICATION_COMMANDS
BOT_PERMISSIONS = EVERYONE_PERMISSIONS
DENIED_BY_FAULT = SEND_MESSAGES | EMBED_LINKS | ATTACH_FILES

# Gateway intents that need a switch in the developer portal.
INTENT_GUILD_MEMBERS = 1 << 1
INTENT_GUILD_PRESENCES = 1 << 8
INTENT_MESSAGE_CONTENT = 1 << 15
PRIVILEGED_INTENTS = INTENT_GUILD_MEMBERS | INTENT_GUILD_PRESENCES | INTENT_MESSAGE_CONTENT

# Interaction types and the callback types each one accepts.
APPLICATION_COMMAND = 2
MESSAGE_COMPONENT = 3
AUTOCOMPLETE = 4
MODAL_SUBMIT = 5
CHANNEL_MESSAGE = 4
DEFERRED_CHANNEL_MESSAGE = 5
DEFERRED_UPDATE_MESSAGE = 6
UPDATE_MESSAGE = 7
AUTOCOMPLETE_RESULT = 8
MODAL = 9
_ALLOWED_CALLBACKS = {
    APPLICATION_COMMAND: {CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE, MODAL},
    MESSAGE_COMPONENT: {
        CHANNEL_MESSAGE,
        DEFERRED_CHANNEL_MESSAGE,
        DEFERRED_UPDATE_MESSAGE,
        UPDATE_MESSAGE,
        MODAL,
    },
    AUTOCOMPLETE: {AUTOCOMPLETE_RESULT},
    MODAL_SUBMIT: {CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE, DEFERRED_UPDATE_MESSAGE, UPDATE_MESSAGE},
}

# Channel types.
GUILD_TEXT = 0
DM = 1

_UPLOAD_LIMITS = {0: 10 * MIB, 1: 10 * MIB, 2: 50 * MIB, 3: 100 * MIB}
_COMMAND_NAME = re.compile(r"^[-_a-z0-9]{1,32}$")
_FILE_FIELD = re.compile(r"^files\[(\d+)\]$")


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


class _Snowflakes:
    """Time-ordered ids in Discord's snowflake layout, so ids sort like the real ones."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        candidate = (int(time.time() * 1000) - _DISCORD_EPOCH_MS) << 22
        self._last = max(candidate, self._last + 1)
        return self._last


# ---------------------------------------------------------------------------- world


@dataclass(eq=False)
class FakeUser:
    id: int
    username: str
    bot: bool = False
    global_name: str | None = None

    def payload(self) -> Json:
        data: Json = {
            "id": str(self.id),
            "username": self.username,
            "discriminator": "0",
            "global_name": self.global_name,
            "avatar": None,
            "public_flags": 0,
        }
        if self.bot:
            data["bot"] = True
        return data


@dataclass(eq=False)
class FakeRole:
    id: int
    name: str
    permissions: int
    position: int = 0
    managed: bool = False

    def payload(self) -> Json:
        return {
            "id": str(self.id),
            "name": self.name,
            "color": 0,
            "hoist": False,
            "icon": None,
            "unicode_emoji": None,
            "position": self.position,
            "permissions": str(self.permissions),
            "managed": self.managed,
            "mentionable": False,
            "flags": 0,
        }


@dataclass(eq=False)
class FakeChannel:
    id: int
    type: int
    name: str | None = None
    guild_id: int | None = None
    nsfw: bool = False
    recipient: FakeUser | None = None
    position: int = 0

    @property
    def is_dm(self) -> bool:
        return self.type == DM

    def payload(self) -> Json:
        if self.recipient is not None:
            return {
                "id": str(self.id),
                "type": self.type,
                "last_message_id": None,
                "flags": 0,
                "recipients": [self.recipient.payload()],
            }
        return {
            "id": str(self.id),
            "type": self.type,
            "guild_id": str(self.guild_id),
            "name": self.name,
            "position": self.position,
            "permission_overwrites": [],
            "nsfw": self.nsfw,
            "parent_id": None,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "flags": 0,
        }


@dataclass(eq=False)
class FakeMember:
    user: FakeUser
    roles: list[FakeRole] = field(default_factory=list)
    # When set, sent as the member's permissions regardless of roles.
    permissions: int | None = None
    joined_at: str = field(default_factory=_now_iso)

    def payload(self) -> Json:
        return {
            "user": self.user.payload(),
            "nick": None,
            "avatar": None,
            "roles": [str(role.id) for role in self.roles],
            "joined_at": self.joined_at,
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "communication_disabled_until": None,
        }


@dataclass(eq=False)
class FakeGuild:
    id: int
    name: str
    owner_id: int
    roles: list[FakeRole]
    channels: list[FakeChannel] = field(default_factory=list)
    members: dict[int, FakeMember] = field(default_factory=dict)
    premium_tier: int = 0
    preferred_locale: str = "en-US"

    @property
    def everyone(self) -> FakeRole:
        return self.roles[0]

    @property
    def attachment_size_limit(self) -> int:
        return _UPLOAD_LIMITS[self.premium_tier]

    def permissions_of(self, user_id: int) -> int:
        member = self.members[user_id]
        if member.permissions is not None:
            return member.permissions
        value = self.everyone.permissions
        for role in member.roles:
            value |= role.permissions
        if user_id == self.owner_id or value & ADMINISTRATOR:
            return ALL_PERMISSIONS
        return value

    def rest_payload(self) -> Json:
        return {
            "id": str(self.id),
            "name": self.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "owner_id": str(self.owner_id),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 1,
            "default_message_notifications": 1,
            "explicit_content_filter": 2,
            "roles": [role.payload() for role in self.roles],
            "emojis": [],
            "stickers": [],
            "features": [],
            "mfa_level": 0,
            "system_channel_id": str(self.channels[0].id) if self.channels else None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "vanity_url_code": None,
            "description": None,
            "banner": None,
            "premium_tier": self.premium_tier,
            "premium_subscription_count": 0,
            "preferred_locale": self.preferred_locale,
            "public_updates_channel_id": None,
            "nsfw_level": 0,
            "premium_progress_bar_enabled": False,
        }

    def gateway_payload(self, *, bot_id: int, all_members: bool) -> Json:
        # Without the GUILD_MEMBERS intent Discord only includes the bot's own member.
        members = [m for m in self.members.values() if all_members or m.user.id == bot_id]
        return {
            **self.rest_payload(),
            "unavailable": False,
            "large": False,
            "lazy": True,
            "joined_at": self.members[bot_id].joined_at,
            "member_count": len(self.members),
            "members": [m.payload() for m in members],
            "channels": [{k: v for k, v in c.payload().items() if k != "guild_id"} for c in self.channels],
            "threads": [],
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
        }


@dataclass(frozen=True)
class Upload:
    """A file a user attaches to a slash command; served by the fake CDN."""

    filename: str
    data: bytes
    content_type: str | None = None


# ---------------------------------------------------------------------------- records


@dataclass(eq=False)
class FakeAttachment:
    id: int
    filename: str
    data: bytes
    url: str
    content_type: str | None = None
    description: str | None = None
    width: int | None = None
    height: int | None = None
    ephemeral: bool = False

    @property
    def size(self) -> int:
        return len(self.data)

    def payload(self) -> Json:
        data: Json = {
            "id": str(self.id),
            "filename": self.filename,
            "size": self.size,
            "url": self.url,
            "proxy_url": self.url,
        }
        if self.content_type:
            data["content_type"] = self.content_type
        if self.width is not None and self.height is not None:
            data["width"], data["height"] = self.width, self.height
        if self.description is not None:
            data["description"] = self.description
        if self.ephemeral:
            data["ephemeral"] = True
        return data


def _walk_components(components: Sequence[Json]) -> Iterator[Json]:
    for component in components:
        yield component
        yield from _walk_components(component.get("components") or [])
        if isinstance(component.get("accessory"), dict):
            yield component["accessory"]


@dataclass(eq=False)
class SentMessage:
    """A message the bot created, by any route; later edits update it in place."""

    id: int
    channel_id: int
    author: FakeUser
    guild_id: int | None = None
    type: int = 0
    content: str = ""
    embeds: list[Json] = field(default_factory=list)
    components: list[Json] = field(default_factory=list)
    attachments: list[FakeAttachment] = field(default_factory=list)
    flags: int = 0
    interaction: InteractionRecord | None = None
    webhook_id: int | None = None
    # Bodies of every later edit, in order.
    edits: list[Json] = field(default_factory=list)
    deleted: bool = False
    timestamp: str = field(default_factory=_now_iso)
    edited_timestamp: str | None = None

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & EPHEMERAL)

    @property
    def loading(self) -> bool:
        return bool(self.flags & LOADING)

    @property
    def custom_ids(self) -> list[str]:
        return [c["custom_id"] for c in _walk_components(self.components) if "custom_id" in c]

    def component(self, custom_id: str) -> Json | None:
        return next((c for c in _walk_components(self.components) if c.get("custom_id") == custom_id), None)

    def payload(self) -> Json:
        data: Json = {
            "id": str(self.id),
            "channel_id": str(self.channel_id),
            "type": self.type,
            "author": self.author.payload(),
            "content": self.content,
            "timestamp": self.timestamp,
            "edited_timestamp": self.edited_timestamp,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [a.payload() for a in self.attachments],
            "embeds": self.embeds,
            "components": self.components,
            "pinned": False,
            "flags": self.flags,
        }
        if self.webhook_id is not None:
            data["webhook_id"] = str(self.webhook_id)
            data["application_id"] = str(self.webhook_id)
        if self.interaction is not None:
            data["interaction_metadata"] = {
                "id": str(self.interaction.id),
                "type": self.interaction.type,
                "user": self.interaction.user.payload(),
                "authorizing_integration_owners": self.interaction.payload["authorizing_integration_owners"],
            }
        return data


@dataclass(eq=False)
class CallbackRecord:
    type: int
    data: Json
    message: SentMessage | None = None


@dataclass(eq=False)
class InteractionRecord:
    """One interaction the fake sent, and everything the bot did with its token."""

    id: int
    token: str
    type: int
    user: FakeUser
    channel: FakeChannel
    payload: Json
    created_at: float
    source_message: SentMessage | None = None
    callbacks: list[CallbackRecord] = field(default_factory=list)
    # The message "@original" names: the response message, or the clicked one after type 6/7.
    original: SentMessage | None = None
    followups: list[SentMessage] = field(default_factory=list)
    expired: bool = False

    @property
    def callback(self) -> CallbackRecord | None:
        return self.callbacks[0] if self.callbacks else None

    @property
    def callback_type(self) -> int | None:
        return self.callbacks[0].type if self.callbacks else None

    @property
    def ephemeral(self) -> bool:
        return bool(self.callbacks and int(self.callbacks[0].data.get("flags") or 0) & EPHEMERAL)

    @property
    def choices(self) -> list[Json] | None:
        cb = self.callback
        return list(cb.data.get("choices") or []) if cb and cb.type == AUTOCOMPLETE_RESULT else None

    @property
    def messages(self) -> list[SentMessage]:
        found = [self.original] if self.original is not None and self.original is not self.source_message else []
        return found + [m for m in self.followups if m not in found]

    @property
    def size_limit(self) -> int:
        return int(self.payload["attachment_size_limit"])


@dataclass(frozen=True)
class FilePart:
    field: str
    filename: str
    content_type: str | None
    data: bytes


@dataclass(eq=False)
class RequestRecord:
    method: str
    path: str
    route: str | None
    query: dict[str, str]
    json: Any
    files: list[FilePart]
    status: int
    at: float


@dataclass(eq=False)
class _Session:
    id: str
    intents: int
    shard: list[int] | None
    seq: int = 0
    events: list[tuple[int, Json]] = field(default_factory=list)
    connection: GatewayConnection | None = None
    resumable: bool = True


@dataclass(eq=False)
class GatewayConnection:
    """One websocket the client opened, with what it asked for and how it ended."""

    path: str
    query: dict[str, str]
    compression: str | None
    # "identify", "resume" or "invalid" once the client has said which.
    kind: str | None = None
    ops: list[int] = field(default_factory=list)
    closed: bool = False
    # The fake's code when it closed the socket, otherwise the client's.
    close_code: int | None = None
    _ws: web.WebSocketResponse | None = None
    _zlib: Any = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _session: _Session | None = None

    async def send(self, frame: Json) -> None:
        assert self._ws is not None
        text = json.dumps(frame, separators=(",", ":"))
        # Compression and write stay together so the shared zlib stream matches frame order.
        async with self._lock:
            if self._zlib is not None:
                chunk = self._zlib.compress(text.encode()) + self._zlib.flush(zlib.Z_SYNC_FLUSH)
                await self._ws.send_bytes(chunk)
            else:
                await self._ws.send_str(text)


class _ApiError(Exception):
    def __init__(self, status: int, code: int, message: str, errors: Json | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.errors = status, code, message, errors


def _form_error(path: str, code: str, message: str) -> _ApiError:
    errors: Json = {"_errors": [{"code": code, "message": message}]}
    for key in reversed(path.split(".")):
        errors = {key: errors}
    return _ApiError(400, 50035, "Invalid Form Body", errors)


@dataclass(eq=False)
class _Fault:
    method: str
    route: str
    remaining: int
    respond: Callable[[], web.Response]


@dataclass(frozen=True)
class _Body:
    json: Any = None
    files: tuple[FilePart, ...] = ()


_BODY = web.RequestKey("body", _Body)


def _image_size(data: bytes) -> tuple[int, int] | None:
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            return int(width), int(height)
    except Exception:  # not an image Pillow knows: Discord then sends no dimensions either
        return None


# ---------------------------------------------------------------------------- server


class FakeDiscord:
    """Discord's REST API, CDN and gateway for one bot application, on a free loopback port.

    The default world: one guild with channels ``general`` and ``after-dark`` (NSFW), an
    ``Admin`` role, the bot, a plain member ``alice`` and a member ``admin`` holding ``Admin``.
    """

    def __init__(
        self,
        *,
        token: str = "fake-bot-token",
        app_name: str = "Likeness",
        heartbeat_interval: float = 41.25,
        token_lifetime: float = 15 * 60,
        response_deadline: float | None = 3.0,
        privileged_intents: int = 0,
    ) -> None:
        self.token = token
        self.heartbeat_interval = heartbeat_interval
        self.token_lifetime = token_lifetime
        # Discord forgets an interaction that got no callback within 3 s (None: never).
        self.response_deadline = response_deadline
        self.privileged_intents = privileged_intents
        self._ids = _Snowflakes()
        self.application_id = self._ids.next()
        self.application_flags = 0
        self.bot_user = FakeUser(self.application_id, app_name, bot=True)
        self.owner = FakeUser(self._ids.next(), "owner")
        self.users: dict[int, FakeUser] = {u.id: u for u in (self.bot_user, self.owner)}
        self.guilds: dict[int, FakeGuild] = {}
        self.channels: dict[int, FakeChannel] = {}

        guild_id = self._ids.next()
        everyone = FakeRole(guild_id, "@everyone", EVERYONE_PERMISSIONS)
        self.admin_role = FakeRole(self._ids.next(), "Admin", ADMINISTRATOR, position=2)
        bot_role = FakeRole(self._ids.next(), app_name, BOT_PERMISSIONS, position=1, managed=True)
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
        self.connections: list[GatewayConnection] = []
        self.identify_payloads: list[Json] = []
        # Requests the fake could not serve; a test should expect this to stay empty.
        self.server_errors: list[str] = []

        self._by_token: dict[str, InteractionRecord] = {}
        self._cdn: dict[int, FakeAttachment] = {}
        self._command_ids: dict[tuple[int | None, str], int] = {}
        self._faults: list[_Fault] = []
        self._denied_channels: set[int] = set()
        self._closed_dms: set[int] = set()
        self._expired_cdn: set[int] = set()
        self._sessions: dict[str, _Session] = {}
        self._session: _Session | None = None
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._routes = self._route_table()
        self.route_keys = frozenset(f"{method} {path}" for method, path, _ in self._routes)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        app = web.Application(middlewares=[self._middleware], client_max_size=200 * MIB)
        for method, path, handler in self._routes:
            app.router.add_route(method, API_PREFIX + path, handler)
        app.router.add_get(GATEWAY_PATH, self._h_gateway)
        app.router.add_get(RESUME_GATEWAY_PATH, self._h_gateway)
        app.router.add_get("/attachments/{channel_id}/{attachment_id}/{filename}", self._h_cdn)
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", self._h_unknown)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()

    async def stop(self) -> None:
        for conn in self.connections:
            if conn._ws is not None and not conn.closed:
                conn.closed = True
                await conn._ws.close(code=1001)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

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
        user = FakeUser(self._ids.next(), username, global_name=username.title())
        self.users[user.id] = user
        if member:
            (guild or self.guild).members[user.id] = FakeMember(user, list(roles), permissions)
        return user

    def add_channel(self, name: str, *, nsfw: bool = False, guild: FakeGuild | None = None) -> FakeChannel:
        """A guild text channel; add it before the bot connects so it is in GUILD_CREATE."""
        guild = guild or self.guild
        channel = FakeChannel(self._ids.next(), GUILD_TEXT, name, guild.id, nsfw, position=len(guild.channels))
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
        channel = FakeChannel(self._ids.next(), DM, recipient=user)
        self.channels[channel.id] = channel
        return channel

    # ------------------------------------------------------------------ faults

    def _check_route(self, method: str, route: str) -> None:
        if f"{method} {route}" not in self.route_keys:
            raise ValueError(f"no route {method} {route}; known: {sorted(self.route_keys)}")

    def rate_limit(
        self,
        method: str,
        route: str,
        *,
        times: int = 1,
        retry_after: float = 0.05,
        is_global: bool = False,
        cloudflare: bool = False,
    ) -> None:
        """Answer the next ``times`` calls of a route (e.g. ``POST /channels/{channel_id}/messages``)
        with 429. ``cloudflare`` sends the HTML ban page without ``Via`` instead of Discord's JSON."""
        self._check_route(method, route)

        def respond() -> web.Response:
            if cloudflare:
                return web.Response(
                    status=429, text="<html>You are being rate limited</html>", content_type="text/html"
                )
            scope = "global" if is_global else "user"
            headers = {
                "Content-Type": "application/json",
                "Retry-After": str(max(1, round(retry_after))),
                "X-RateLimit-Limit": "5",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": f"{time.time() + retry_after:.3f}",
                "X-RateLimit-Reset-After": f"{retry_after:.3f}",
                "X-RateLimit-Bucket": hashlib.md5(route.encode()).hexdigest(),
                "X-RateLimit-Scope": scope,
                "Via": "1.1 google",
            }
            if is_global:
                headers["X-RateLimit-Global"] = "true"
            body = {"message": "You are being rate limited.", "retry_after": retry_after, "global": is_global}
            return web.Response(status=429, body=json.dumps(body).encode(), headers=headers)

        self._faults.append(_Fault(method, route, times, respond))

    def fail(self, method: str, route: str, *, status: int, code: int, message: str, times: int = 1) -> None:
        """Answer the next ``times`` calls of a route with a Discord JSON error."""
        self._check_route(method, route)
        self._faults.append(
            _Fault(method, route, times, lambda: self._error_response(_ApiError(status, code, message)))
        )

    def deny_channel(self, channel: FakeChannel) -> None:
        """The bot loses Send Messages/Attach Files there: posts and edits get 403 code 50013."""
        self._denied_channels.add(channel.id)

    def allow_channel(self, channel: FakeChannel) -> None:
        self._denied_channels.discard(channel.id)

    def close_dms(self, user: FakeUser) -> None:
        """``user`` does not accept DMs: opening the channel works, sending gets 403 code 50007."""
        self._closed_dms.add(user.id)

    def expire_token(self, interaction: InteractionRecord | str) -> None:
        """Age an interaction token past its 15 minutes: webhook calls get 401 code 50027."""
        record = self._by_token[interaction] if isinstance(interaction, str) else interaction
        record.expired = True

    def expire_attachment_urls(self) -> None:
        """Signed CDN URLs handed out so far stop working, like Discord's do after a while."""
        self._expired_cdn.update(self._cdn)

    def _take_fault(self, method: str, route: str) -> web.Response | None:
        for fault in self._faults:
            if fault.method == method and fault.route == route and fault.remaining > 0:
                fault.remaining -= 1
                return fault.respond()
        return None

    # ------------------------------------------------------------------ waiting

    async def _notify(self) -> None:
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

    async def wait_for_callback(
        self,
        interaction: InteractionRecord,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> CallbackRecord:
        return await self.wait_for(lambda: interaction.callback, timeout)

    async def wait_for_followups(
        self,
        interaction: InteractionRecord,
        count: int = 1,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> list[SentMessage]:
        return await self.wait_for(
            lambda: list(interaction.followups) if len(interaction.followups) >= count else None, timeout
        )

    async def wait_for_message(
        self,
        predicate: Callable[[SentMessage], bool] = lambda m: True,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> SentMessage:
        """The first message the bot created (by any route) that matches ``predicate``."""
        return await self.wait_for(lambda: next((m for m in self.messages.values() if predicate(m)), None), timeout)

    async def wait_until_ready(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Wait until a client has identified and been sent READY and its guilds."""
        await self.wait_for(lambda: self._live_session() is not None, timeout)

    # ------------------------------------------------------------------ queries

    def requests_to(self, method: str, route: str) -> list[RequestRecord]:
        return [r for r in self.requests if r.method == method and r.route == route]

    def channel_messages(self, channel: FakeChannel) -> list[SentMessage]:
        return [m for m in self.messages.values() if m.channel_id == channel.id and not m.deleted]

    def dm_messages(self, user: FakeUser) -> list[SentMessage]:
        return self.channel_messages(self.dm_channel(user))

    # ------------------------------------------------------------------ gateway control

    def _live_session(self) -> _Session | None:
        session = self._session
        if session is None or session.connection is None or session.connection.closed:
            return None
        return session

    def _connection(self) -> GatewayConnection:
        session = self._live_session()
        if session is None or session.connection is None:
            raise RuntimeError("no client is connected to the fake gateway")
        return session.connection

    async def dispatch(self, event: str, data: Json) -> None:
        """Send a gateway DISPATCH to the bot; kept for replay if the socket is down (as Discord does)."""
        session = self._session
        if session is None:
            await self.wait_until_ready()
            session = self._session
        assert session is not None
        await self._send_dispatch(session, event, data)

    async def _send_dispatch(self, session: _Session, event: str, data: Json) -> None:
        session.seq += 1
        frame = {"op": 0, "t": event, "s": session.seq, "d": data}
        session.events.append((session.seq, frame))
        conn = session.connection
        if conn is not None and not conn.closed:
            # A socket can die between the check and the write; the event then waits for RESUME.
            with contextlib.suppress(ConnectionError, RuntimeError):
                await conn.send(frame)

    async def reconnect(self) -> None:
        """Send op 7 RECONNECT: the client must drop the socket and RESUME."""
        await self._connection().send({"op": 7, "d": None, "s": None, "t": None})

    async def disconnect(self, code: int = 4000) -> None:
        """Drop the socket with a resumable close code; events sent meanwhile are replayed."""
        conn = self._connection()
        conn.closed, conn.close_code = True, code
        assert conn._ws is not None
        await conn._ws.close(code=code)

    async def invalidate_session(self, *, resumable: bool = False) -> None:
        """Send op 9; with ``resumable=False`` the session is gone and the client must IDENTIFY anew."""
        conn = self._connection()
        if conn._session is not None and not resumable:
            conn._session.resumable = False
        await conn.send({"op": 9, "d": resumable, "s": None, "t": None})

    async def _h_gateway(self, request: web.Request) -> web.StreamResponse:
        compression = request.query.get("compress")
        encoding = request.query.get("encoding", "json")
        if compression not in (None, "zlib-stream") or encoding != "json" or request.query.get("v") != "10":
            self.server_errors.append(f"gateway options not supported: {dict(request.query)}")
            raise web.HTTPBadRequest(text="unsupported gateway options")
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        conn = GatewayConnection(request.path, dict(request.query), compression, _ws=ws)
        if compression == "zlib-stream":
            conn._zlib = zlib.compressobj()
        self.connections.append(conn)
        await self._notify()
        await conn.send(
            {"op": 10, "d": {"heartbeat_interval": int(self.heartbeat_interval * 1000)}, "s": None, "t": None}
        )
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    self.server_errors.append(f"gateway frame type not supported: {msg.type}")
                    break
                if not await self._on_gateway_frame(conn, json.loads(msg.data)):
                    break
        finally:
            conn.closed = True
            if conn.close_code is None:
                conn.close_code = ws.close_code
            if conn._session is not None and conn._session.connection is conn:
                conn._session.connection = None
            await self._notify()
        return ws

    async def _close(self, conn: GatewayConnection, code: int, reason: str) -> bool:
        assert conn._ws is not None
        conn.closed, conn.close_code = True, code
        await conn._ws.close(code=code, message=reason.encode())
        return False

    async def _on_gateway_frame(self, conn: GatewayConnection, frame: Json) -> bool:
        op, data = frame.get("op"), frame.get("d")
        conn.ops.append(int(op) if isinstance(op, int) else -1)
        if op == 1:
            await conn.send({"op": 11, "d": None, "s": None, "t": None})
        elif op == 2:
            return await self._identify(conn, data or {})
        elif op == 6:
            await self._resume(conn, data or {})
        elif op in (3, 4, 8):
            # Presence, voice and member requests: accepted, nothing in this fake depends on them.
            if conn._session is None:
                return await self._close(conn, 4003, "Not authenticated.")
        else:
            return await self._close(conn, 4001, "Unknown opcode.")
        await self._notify()
        return True

    async def _identify(self, conn: GatewayConnection, data: Json) -> bool:
        if conn._session is not None:
            return await self._close(conn, 4005, "Already authenticated.")
        self.identify_payloads.append(data)
        if data.get("token") != self.token:
            return await self._close(conn, 4004, "Authentication failed.")
        intents = int(data.get("intents") or 0)
        if intents & PRIVILEGED_INTENTS & ~self.privileged_intents:
            return await self._close(conn, 4014, "Disallowed intent(s).")
        session = _Session(secrets.token_hex(16), intents, data.get("shard"))
        self._sessions[session.id] = session
        self._session = session
        conn.kind, conn._session, session.connection = "identify", session, conn
        ready: Json = {
            "v": 10,
            "user": {**self.bot_user.payload(), "verified": True, "mfa_enabled": False, "flags": 0},
            "guilds": [{"id": str(g.id), "unavailable": True} for g in self.guilds.values()],
            "session_id": session.id,
            "session_type": "normal",
            "resume_gateway_url": self.resume_gateway_url,
            "application": {"id": str(self.application_id), "flags": self.application_flags},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "user_settings": {},
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": [],
        }
        if session.shard is not None:
            ready["shard"] = session.shard
        await self._send_dispatch(session, "READY", ready)
        all_members = bool(intents & INTENT_GUILD_MEMBERS)
        for guild in self.guilds.values():
            await self._send_dispatch(
                session,
                "GUILD_CREATE",
                guild.gateway_payload(bot_id=self.bot_user.id, all_members=all_members),
            )
        await self._notify()
        return True

    async def _resume(self, conn: GatewayConnection, data: Json) -> None:
        session = self._sessions.get(str(data.get("session_id")))
        if session is None or not session.resumable or data.get("token") != self.token:
            conn.kind = "invalid"
            await conn.send({"op": 9, "d": False, "s": None, "t": None})
            return
        conn.kind, conn._session, session.connection = "resume", session, conn
        self._session = session
        seen = int(data.get("seq") or 0)
        for seq, frame in list(session.events):
            if seq > seen:
                await conn.send(frame)
        await self._send_dispatch(session, "RESUMED", {})

    # ------------------------------------------------------------------ injection

    async def slash(
        self,
        user: FakeUser,
        channel: FakeChannel,
        name: str,
        options: Mapping[str, Any] | None = None,
        *,
        attachments: Mapping[str, Upload] | None = None,
        locale: str = "en-US",
    ) -> InteractionRecord:
        """Invoke a chat-input command as ``user`` in ``channel`` (a guild channel or ``dm_channel``).

        ``name`` may name a subcommand ("admin grant"). Option values map to option types:
        str, int, float, bool, FakeUser, FakeChannel, FakeRole, Upload (an attachment, served by
        the fake CDN); ``attachments`` is a shorthand for Upload options.
        """
        values = {**(options or {}), **(attachments or {})}
        data = self._command_data(channel, name, values, focused=None)
        return await self._interact(APPLICATION_COMMAND, user, channel, data, locale=locale)

    async def autocomplete(
        self,
        user: FakeUser,
        channel: FakeChannel,
        name: str,
        options: Mapping[str, Any],
        *,
        focused: str,
        locale: str = "en-US",
    ) -> InteractionRecord:
        """Ask for choices while ``user`` types option ``focused``; the answer lands in ``.choices``."""
        data = self._command_data(channel, name, options, focused=focused)
        return await self._interact(AUTOCOMPLETE, user, channel, data, locale=locale)

    async def click(
        self,
        user: FakeUser,
        message: SentMessage,
        custom_id: str,
        *,
        values: Sequence[str] | None = None,
        locale: str = "en-US",
    ) -> InteractionRecord:
        """Press a button (or pick ``values`` in a select) on a message the bot sent."""
        component = message.component(custom_id)
        if component is None:
            raise ValueError(f"message {message.id} has no component {custom_id!r}; it has {message.custom_ids}")
        data: Json = {"custom_id": custom_id, "component_type": component["type"]}
        if component["type"] != 2:
            data["values"] = list(values or [])
        channel = self.channels[message.channel_id]
        return await self._interact(MESSAGE_COMPONENT, user, channel, data, message=message, locale=locale)

    async def submit_modal(
        self,
        user: FakeUser,
        interaction: InteractionRecord,
        fields: Mapping[str, str],
        *,
        locale: str = "en-US",
    ) -> InteractionRecord:
        """Submit the modal the bot opened (callback type 9) on ``interaction``, with text input values."""
        cb = interaction.callback
        if cb is None or cb.type != MODAL:
            raise ValueError(f"interaction {interaction.id} did not open a modal")
        rows = [
            {"type": 1, "components": [{"type": 4, "custom_id": key, "value": value}]} for key, value in fields.items()
        ]
        data: Json = {"custom_id": cb.data["custom_id"], "components": rows}
        return await self._interact(
            MODAL_SUBMIT, user, interaction.channel, data, message=interaction.source_message, locale=locale
        )

    def _command_schema(self, channel: FakeChannel, path: Sequence[str]) -> tuple[Json | None, int | None]:
        guild_id = channel.guild_id
        found = None
        if guild_id is not None:
            found = next((c for c in self.guild_commands.get(guild_id, []) if c["name"] == path[0]), None)
        if found is None:
            found = next((c for c in self.global_commands if c["name"] == path[0]), None)
            guild_id = None
        node = found
        for part in path[1:]:
            if node is None:
                break
            node = next((o for o in node.get("options") or [] if o["name"] == part), None)
        return node, (guild_id if found is not None else None)

    def _command_data(self, channel: FakeChannel, name: str, values: Mapping[str, Any], focused: str | None) -> Json:
        path = name.split()
        schema, command_guild = self._command_schema(channel, path)
        declared = {o["name"]: int(o["type"]) for o in (schema or {}).get("options") or []}
        options: list[Json] = []
        resolved: dict[str, Json] = {}
        for key, value in values.items():
            option = self._option(key, value, declared.get(key), channel, resolved)
            if key == focused:
                option["focused"] = True
                option["value"] = str(value)
            options.append(option)
        for depth in range(len(path) - 1, 0, -1):
            options = [{"name": path[depth], "type": 1 if depth == len(path) - 1 else 2, "options": options}]
        command_id = self._command_ids.setdefault((command_guild, path[0]), self._ids.next())
        data: Json = {"id": str(command_id), "name": path[0], "type": 1, "options": options}
        if resolved:
            data["resolved"] = resolved
        if command_guild is not None:
            data["guild_id"] = str(command_guild)
        return data

    def _option(self, name: str, value: Any, declared: int | None, channel: FakeChannel, resolved: Json) -> Json:
        if isinstance(value, Upload):
            attachment = self._attachment(channel.id, value.filename, value.data, value.content_type)
            resolved.setdefault("attachments", {})[str(attachment.id)] = attachment.payload()
            return {"name": name, "type": 11, "value": str(attachment.id)}
        if isinstance(value, FakeUser):
            resolved.setdefault("users", {})[str(value.id)] = value.payload()
            guild = self.guilds.get(channel.guild_id or 0)
            if guild is not None and value.id in guild.members:
                member = {k: v for k, v in guild.members[value.id].payload().items() if k != "user"}
                member["permissions"] = str(guild.permissions_of(value.id))
                resolved.setdefault("members", {})[str(value.id)] = member
            return {"name": name, "type": 6, "value": str(value.id)}
        if isinstance(value, FakeChannel):
            entry = {**value.payload(), "permissions": str(ALL_PERMISSIONS)}
            resolved.setdefault("channels", {})[str(value.id)] = entry
            return {"name": name, "type": 7, "value": str(value.id)}
        if isinstance(value, FakeRole):
            resolved.setdefault("roles", {})[str(value.id)] = value.payload()
            return {"name": name, "type": 8, "value": str(value.id)}
        if isinstance(value, bool):
            kind = 5
        elif isinstance(value, int):
            kind = 10 if declared == 10 else 4
        elif isinstance(value, float):
            kind = 10
        else:
            kind, value = 3, str(value)
        return {"name": name, "type": kind, "value": value}

    def _attachment(
        self,
        channel_id: int,
        filename: str,
        data: bytes,
        content_type: str | None,
        description: str | None = None,
    ) -> FakeAttachment:
        attachment_id = self._ids.next()
        expires = int(time.time()) + 86400
        signature = hashlib.sha256(f"{attachment_id}:{expires}".encode()).hexdigest()
        url = (
            f"{self.base_url}/attachments/{channel_id}/{attachment_id}/{filename}"
            f"?ex={expires:x}&is={int(time.time()):x}&hm={signature}&"
        )
        size = _image_size(data)
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
        self._cdn[attachment_id] = attachment
        return attachment

    def _app_permissions(self, channel: FakeChannel) -> int:
        if channel.guild_id is None:
            return VIEW_CHANNEL | SEND_MESSAGES | EMBED_LINKS | ATTACH_FILES | READ_MESSAGE_HISTORY
        value = self.guilds[channel.guild_id].permissions_of(self.bot_user.id)
        if channel.id in self._denied_channels:
            value &= ~DENIED_BY_FAULT
        return value

    async def _interact(
        self,
        kind: int,
        user: FakeUser,
        channel: FakeChannel,
        data: Json,
        *,
        message: SentMessage | None = None,
        locale: str,
    ) -> InteractionRecord:
        token = "aW50ZXJhY3Rpb24" + secrets.token_urlsafe(96)
        payload: Json = {
            "id": str(self._ids.next()),
            "application_id": str(self.application_id),
            "type": kind,
            "token": token,
            "version": 1,
            "data": data,
            "channel_id": str(channel.id),
            "app_permissions": str(self._app_permissions(channel)),
            "locale": locale,
            "entitlements": [],
            "attachment_size_limit": _UPLOAD_LIMITS[0],
        }
        if channel.guild_id is not None:
            guild = self.guilds[channel.guild_id]
            if user.id not in guild.members:
                raise ValueError(f"{user.username} is not a member of {guild.name}")
            permissions = str(guild.permissions_of(user.id))
            payload.update(
                guild_id=str(guild.id),
                guild={"id": str(guild.id), "locale": guild.preferred_locale, "features": []},
                guild_locale=guild.preferred_locale,
                channel={**channel.payload(), "permissions": permissions},
                member={**guild.members[user.id].payload(), "permissions": permissions},
                authorizing_integration_owners={"0": str(guild.id)},
                context=0,
                attachment_size_limit=guild.attachment_size_limit,
            )
        else:
            if channel.recipient is not user:
                raise ValueError(f"{user.username} is not the recipient of DM channel {channel.id}")
            payload.update(
                user=user.payload(),
                channel=channel.payload(),
                authorizing_integration_owners={"0": "0"},
                context=1,
            )
        if message is not None:
            payload["message"] = message.payload()
        record = InteractionRecord(
            id=int(payload["id"]),
            token=token,
            type=kind,
            user=user,
            channel=channel,
            payload=payload,
            created_at=time.monotonic(),
            source_message=message,
        )
        self.interactions[record.id] = record
        self._by_token[token] = record
        await self.dispatch("INTERACTION_CREATE", payload)
        return record

    # ------------------------------------------------------------------ HTTP plumbing

    def _route_table(self) -> list[tuple[str, str, Handler]]:
        app = "/applications/{application_id}"
        hook = "/webhooks/{application_id}/{interaction_token}"
        return [
            ("GET", "/gateway", self._h_gateway_info),
            ("GET", "/gateway/bot", self._h_gateway_info),
            ("GET", "/users/@me", self._h_me),
            ("GET", "/users/{user_id}", self._h_user),
            ("POST", "/users/@me/channels", self._h_create_dm),
            ("GET", "/oauth2/applications/@me", self._h_application),
            ("GET", "/applications/@me", self._h_application),
            ("GET", app + "/commands", self._h_get_commands),
            ("PUT", app + "/commands", self._h_put_commands),
            ("POST", app + "/commands", self._h_post_command),
            ("GET", app + "/guilds/{guild_id}/commands", self._h_get_commands),
            ("PUT", app + "/guilds/{guild_id}/commands", self._h_put_commands),
            ("POST", app + "/guilds/{guild_id}/commands", self._h_post_command),
            ("POST", "/interactions/{interaction_id}/{interaction_token}/callback", self._h_callback),
            ("POST", hook, self._h_followup),
            ("GET", hook + "/messages/{message_id}", self._h_get_webhook_message),
            ("PATCH", hook + "/messages/{message_id}", self._h_edit_webhook_message),
            ("DELETE", hook + "/messages/{message_id}", self._h_delete_webhook_message),
            ("GET", "/channels/{channel_id}", self._h_channel),
            ("POST", "/channels/{channel_id}/messages", self._h_post_message),
            ("GET", "/channels/{channel_id}/messages/{message_id}", self._h_get_message),
            ("PATCH", "/channels/{channel_id}/messages/{message_id}", self._h_edit_message),
            ("DELETE", "/channels/{channel_id}/messages/{message_id}", self._h_delete_message),
            ("GET", "/guilds/{guild_id}", self._h_guild),
            ("GET", "/guilds/{guild_id}/channels", self._h_guild_channels),
            ("GET", "/guilds/{guild_id}/members/{user_id}", self._h_guild_member),
        ]

    def _ok(self, data: Any, status: int = 200) -> web.Response:
        # discord.py only parses JSON when the content type is exactly this, with no charset.
        headers = {
            "Content-Type": "application/json",
            "X-RateLimit-Limit": "50",
            "X-RateLimit-Remaining": "49",
            "X-RateLimit-Reset": f"{time.time() + 1:.3f}",
            "X-RateLimit-Reset-After": "1.000",
        }
        return web.Response(status=status, body=json.dumps(data).encode(), headers=headers)

    @staticmethod
    def _no_content() -> web.Response:
        return web.Response(status=204)

    @staticmethod
    def _error_response(error: _ApiError) -> web.Response:
        body: Json = {"message": error.message, "code": error.code}
        if error.errors is not None:
            body["errors"] = error.errors
        return web.Response(
            status=error.status, body=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )

    @staticmethod
    async def _read_body(request: web.Request) -> _Body:
        if not request.body_exists:
            return _Body()
        if request.content_type == "multipart/form-data":
            payload: Any = None
            files: list[FilePart] = []
            reader = await request.multipart()
            async for part in reader:
                if not isinstance(part, BodyPartReader):
                    continue
                if part.name == "payload_json":
                    payload = json.loads(await part.text())
                else:
                    content = bytes(await part.read())
                    files.append(
                        FilePart(part.name or "", part.filename or "", part.headers.get("Content-Type"), content)
                    )
            return _Body(payload, tuple(files))
        raw = await request.read()
        return _Body(json.loads(raw) if raw else None)

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        canonical = resource.canonical if resource is not None else request.path
        if not canonical.startswith(API_PREFIX):
            return await handler(request)
        route: str | None = canonical[len(API_PREFIX) :]
        route = None if route == "/{tail}" else route
        body = _Body()
        response: web.StreamResponse | None
        try:
            body = await self._read_body(request)
            request[_BODY] = body
            response = self._take_fault(request.method, route) if route else None
            if response is None:
                self._check_auth(request, route)
                response = await handler(request)
        except _ApiError as error:
            response = self._error_response(error)
        except Exception as exc:  # a gap in the fake must fail the test, not look like Discord
            self.server_errors.append(f"{request.method} {request.path}: {exc!r}")
            response = self._error_response(_ApiError(400, 0, f"fake server error: {exc!r}"))
        self.requests.append(
            RequestRecord(
                request.method,
                request.path,
                route,
                dict(request.query),
                body.json,
                list(body.files),
                response.status,
                time.monotonic(),
            )
        )
        await self._notify()
        return response

    def _check_auth(self, request: web.Request, route: str | None) -> None:
        if route is None or route.startswith(("/webhooks/", "/interactions/")):
            return
        if request.headers.get("Authorization") != f"Bot {self.token}":
            raise _ApiError(401, 0, "401: Unauthorized")

    async def _h_unknown(self, request: web.Request) -> web.StreamResponse:
        self.server_errors.append(f"route not served by the fake: {request.method} {request.path}")
        raise _ApiError(404, 0, "404: Not Found")

    async def _h_cdn(self, request: web.Request) -> web.StreamResponse:
        attachment = self._cdn.get(int(request.match_info["attachment_id"]))
        if attachment is None or attachment.id in self._expired_cdn or not request.query.get("hm"):
            return web.Response(status=404, text="This content is no longer available.")
        return web.Response(body=attachment.data, content_type=attachment.content_type or "application/octet-stream")

    # ------------------------------------------------------------------ lookups

    def _app_check(self, request: web.Request) -> None:
        if request.match_info["application_id"] != str(self.application_id):
            raise _ApiError(404, 10002, "Unknown Application")

    def _channel(self, request: web.Request) -> FakeChannel:
        channel = self.channels.get(int(request.match_info["channel_id"]))
        if channel is None:
            raise _ApiError(404, 10003, "Unknown Channel")
        return channel

    def _guild(self, request: web.Request) -> FakeGuild:
        guild = self.guilds.get(int(request.match_info["guild_id"]))
        if guild is None:
            raise _ApiError(404, 10004, "Unknown Guild")
        return guild

    def _size_limit(self, channel: FakeChannel) -> int:
        return self.guilds[channel.guild_id].attachment_size_limit if channel.guild_id else _UPLOAD_LIMITS[0]

    def _check_can_send(self, channel: FakeChannel) -> None:
        if channel.recipient is not None and channel.recipient.id in self._closed_dms:
            raise _ApiError(403, 50007, "Cannot send messages to this user")
        if channel.id in self._denied_channels:
            raise _ApiError(403, 50013, "Missing Permissions")

    def _webhook_interaction(self, request: web.Request) -> InteractionRecord:
        record = self._by_token.get(request.match_info["interaction_token"])
        if request.match_info["application_id"] != str(self.application_id) or record is None:
            raise _ApiError(404, 10015, "Unknown Webhook")
        if record.expired or time.monotonic() - record.created_at > self.token_lifetime:
            raise _ApiError(401, 50027, "Invalid Webhook Token")
        return record

    @staticmethod
    def _interaction_message(record: InteractionRecord, message_id: str) -> SentMessage:
        candidates = [record.original, *record.followups]
        for message in candidates:
            if message is None or message.deleted:
                continue
            if (message_id == "@original" and message is record.original) or message_id == str(message.id):
                return message
        raise _ApiError(404, 10008, "Unknown Message")

    # ------------------------------------------------------------------ messages

    def _payload_and_files(self, request: web.Request) -> tuple[Json, tuple[FilePart, ...]]:
        body: _Body = request[_BODY]
        payload = body.json if isinstance(body.json, dict) else {}
        return payload, body.files

    def _apply(
        self,
        message: SentMessage,
        payload: Json,
        files: Sequence[FilePart],
        size_limit: int,
        *,
        creating: bool,
    ) -> None:
        """Validate like Discord does, then write ``payload`` (and uploads) into ``message``."""
        for part in files:
            if len(part.data) > size_limit:
                raise _ApiError(413, 40005, "Request entity too large")
        new_parts: dict[int, FilePart] = {}
        for index, part in enumerate(files):
            matched = _FILE_FIELD.match(part.field)
            new_parts[int(matched.group(1)) if matched else index] = part
        content = payload.get("content", message.content) or ""
        embeds = list(payload["embeds"] or []) if "embeds" in payload else message.embeds
        components = list(payload["components"] or []) if "components" in payload else message.components
        flags = message.flags
        if creating:
            flags = int(payload.get("flags") or 0)

        attachments: list[FakeAttachment] = []
        used: set[int] = set()
        if "attachments" in payload:
            existing = {a.id: a for a in message.attachments}
            for entry in payload["attachments"] or []:
                key = int(entry["id"])
                if key in existing:
                    attachments.append(existing[key])
                elif key in new_parts:
                    part = new_parts[key]
                    filename = entry.get("filename") or part.filename
                    attachments.append(self._sent_attachment(message, filename, part, entry.get("description")))
                    used.add(key)
                else:
                    raise _form_error("attachments", "ATTACHMENT_NOT_FOUND", f"Attachment {key} not found")
        else:
            attachments = list(message.attachments)
        for key, part in new_parts.items():
            if key not in used:
                attachments.append(self._sent_attachment(message, part.filename, part, None))

        if len(content) > 2000:
            raise _form_error("content", "BASE_TYPE_MAX_LENGTH", "Must be 2000 or fewer in length.")
        if len(embeds) > 10:
            raise _form_error("embeds", "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
        if len(attachments) > 10:
            raise _form_error("attachments", "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
        self._validate_components(components, flags)
        if creating and not (content or embeds or attachments or components or flags & LOADING):
            raise _ApiError(400, 50006, "Cannot send an empty message")

        if not creating:
            message.edits.append(payload)
            message.edited_timestamp = _now_iso()
        message.content, message.embeds, message.components = content, embeds, components
        message.attachments, message.flags = attachments, flags
        for attachment in attachments:
            attachment.ephemeral = message.ephemeral

    @staticmethod
    def _validate_components(components: Sequence[Json], flags: int) -> None:
        if not flags & IS_COMPONENTS_V2:
            if len(components) > 5:
                raise _form_error("components", "BASE_TYPE_MAX_LENGTH", "Must be 5 or fewer in length.")
            for index, row in enumerate(components):
                if row.get("type") != 1:
                    raise _form_error(f"components.{index}.type", "BASE_TYPE_CHOICES", "Value must be one of {1}.")
                if len(row.get("components") or []) > 5:
                    raise _form_error(
                        f"components.{index}.components",
                        "BASE_TYPE_MAX_LENGTH",
                        "Must be 5 or fewer in length.",
                    )
        seen: set[str] = set()
        for component in _walk_components(components):
            custom_id = component.get("custom_id")
            if custom_id is None:
                continue
            if not 1 <= len(custom_id) <= 100:
                raise _form_error("components", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
            if custom_id in seen:
                raise _form_error(
                    "components", "COMPONENT_CUSTOM_ID_DUPLICATED", "Component custom id cannot be duplicated"
                )
            seen.add(custom_id)

    def _sent_attachment(
        self, message: SentMessage, filename: str, part: FilePart, description: str | None
    ) -> FakeAttachment:
        # Discord guesses the type from the name; discord.py labels every part application/octet-stream.
        guessed = mimetypes.guess_type(filename)[0]
        return self._attachment(message.channel_id, filename, part.data, guessed or part.content_type, description)

    def _new_message(
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
            id=self._ids.next(),
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
        self._apply(message, payload, files, size_limit, creating=True)
        self.messages[message.id] = message
        return message

    # ------------------------------------------------------------------ handlers: identity

    async def _h_gateway_info(self, request: web.Request) -> web.StreamResponse:
        data: Json = {"url": self.gateway_url}
        if request.path.endswith("/bot"):
            data["shards"] = 1
            data["session_start_limit"] = {
                "total": 1000,
                "remaining": 999,
                "reset_after": 14_400_000,
                "max_concurrency": 1,
            }
        return self._ok(data)

    async def _h_me(self, request: web.Request) -> web.StreamResponse:
        return self._ok({**self.bot_user.payload(), "verified": True, "mfa_enabled": False, "flags": 0, "bio": ""})

    async def _h_user(self, request: web.Request) -> web.StreamResponse:
        user = self.users.get(int(request.match_info["user_id"]))
        if user is None:
            raise _ApiError(404, 10013, "Unknown User")
        return self._ok(user.payload())

    async def _h_application(self, request: web.Request) -> web.StreamResponse:
        return self._ok(
            {
                "id": str(self.application_id),
                "name": self.bot_user.username,
                "icon": None,
                "description": "",
                "summary": "",
                "type": None,
                "bot_public": False,
                "bot_require_code_grant": False,
                "verify_key": secrets.token_hex(32),
                "owner": self.owner.payload(),
                "team": None,
                "flags": self.application_flags,
                "bot": self.bot_user.payload(),
                "tags": [],
                "approximate_guild_count": len(self.guilds),
                "interactions_endpoint_url": None,
                "redirect_uris": [],
            }
        )

    # ------------------------------------------------------------------ handlers: commands

    def _command_store(self, request: web.Request) -> tuple[int | None, list[Json]]:
        self._app_check(request)
        if "guild_id" in request.match_info:
            guild = self._guild(request)
            return guild.id, self.guild_commands.setdefault(guild.id, [])
        return None, self.global_commands

    def _register_command(self, guild_id: int | None, raw: Json, index: int) -> Json:
        kind = int(raw.get("type") or 1)
        name = str(raw.get("name") or "")
        description = str(raw.get("description") or "")
        if kind == 1:
            if not _COMMAND_NAME.match(name):
                raise _form_error(f"{index}.name", "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid")
            if not 1 <= len(description) <= 100:
                raise _form_error(
                    f"{index}.description", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length."
                )
            if len(raw.get("options") or []) > 25:
                raise _form_error(f"{index}.options", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
        command_id = self._command_ids.setdefault((guild_id, name), self._ids.next())
        stored: Json = {
            "id": str(command_id),
            "application_id": str(self.application_id),
            "version": str(self._ids.next()),
            "type": kind,
            "name": name,
            "description": description,
            "options": raw.get("options") or [],
            "default_member_permissions": raw.get("default_member_permissions"),
            "nsfw": bool(raw.get("nsfw")),
            "contexts": raw.get("contexts"),
            "integration_types": raw.get("integration_types") or [0],
        }
        if guild_id is not None:
            stored["guild_id"] = str(guild_id)
        return stored

    async def _h_get_commands(self, request: web.Request) -> web.StreamResponse:
        _, store = self._command_store(request)
        return self._ok(store)

    async def _h_put_commands(self, request: web.Request) -> web.StreamResponse:
        guild_id, store = self._command_store(request)
        body = request[_BODY].json or []
        if guild_id is None and len(body) > 100:
            raise _form_error("_", "BASE_TYPE_MAX_LENGTH", "Must be 100 or fewer in length.")
        commands = [self._register_command(guild_id, raw, i) for i, raw in enumerate(body)]
        store[:] = commands
        return self._ok(commands)

    async def _h_post_command(self, request: web.Request) -> web.StreamResponse:
        guild_id, store = self._command_store(request)
        command = self._register_command(guild_id, request[_BODY].json or {}, 0)
        store[:] = [c for c in store if c["name"] != command["name"]] + [command]
        return self._ok(command, status=201)

    # ------------------------------------------------------------------ handlers: interactions

    async def _h_callback(self, request: web.Request) -> web.StreamResponse:
        record = self.interactions.get(int(request.match_info["interaction_id"]))
        if record is None or record.token != request.match_info["interaction_token"] or record.expired:
            raise _ApiError(404, 10062, "Unknown interaction")
        if record.callbacks:
            raise _ApiError(400, 40060, "Interaction has already been acknowledged.")
        if self.response_deadline is not None and time.monotonic() - record.created_at > self.response_deadline:
            raise _ApiError(404, 10062, "Unknown interaction")
        payload, files = self._payload_and_files(request)
        kind = int(payload.get("type") or 0)
        data: Json = payload.get("data") or {}
        if kind not in _ALLOWED_CALLBACKS[record.type]:
            raise _form_error(
                "type",
                "BASE_TYPE_CHOICES",
                f"Value must be one of {sorted(_ALLOWED_CALLBACKS[record.type])}.",
            )

        message: SentMessage | None = None
        if kind == CHANNEL_MESSAGE:
            message_type = 20 if record.type == APPLICATION_COMMAND else 0
            message = self._new_message(
                record.channel, data, files, record.size_limit, message_type=message_type, interaction=record
            )
            record.original = message
        elif kind == DEFERRED_CHANNEL_MESSAGE:
            flags = (int(data.get("flags") or 0) & EPHEMERAL) | LOADING
            message_type = 20 if record.type == APPLICATION_COMMAND else 0
            message = self._new_message(
                record.channel,
                {"flags": flags},
                (),
                record.size_limit,
                message_type=message_type,
                interaction=record,
            )
            record.original = message
        elif kind in (DEFERRED_UPDATE_MESSAGE, UPDATE_MESSAGE):
            if record.source_message is None:
                raise _ApiError(400, 50035, "Invalid Form Body")
            record.original = record.source_message
            if kind == UPDATE_MESSAGE:
                message = record.source_message
                self._apply(message, data, files, record.size_limit, creating=False)
        elif kind == MODAL and not (data.get("custom_id") and data.get("components")):
            raise _form_error("data.custom_id", "BASE_TYPE_REQUIRED", "This field is required")
        record.callbacks.append(CallbackRecord(kind, data, message))

        if request.query.get("with_response") not in ("1", "true", "True"):
            return self._no_content()
        interaction: Json = {
            "id": str(record.id),
            "type": record.type,
            "response_message_loading": kind == DEFERRED_CHANNEL_MESSAGE,
            "response_message_ephemeral": bool(message and message.ephemeral),
        }
        response: Json = {"interaction": interaction}
        if message is not None:
            interaction["response_message_id"] = str(message.id)
            response["resource"] = {"type": kind, "message": message.payload()}
        return self._ok(response)

    async def _h_followup(self, request: web.Request) -> web.StreamResponse:
        record = self._webhook_interaction(request)
        if not record.callbacks:
            raise _ApiError(404, 10015, "Unknown Webhook")
        payload, files = self._payload_and_files(request)
        original = record.original
        if (
            original is not None
            and original.loading
            and not record.followups
            and record.callback_type == DEFERRED_CHANNEL_MESSAGE
        ):
            # Discord turns the first follow-up after a deferral into the "thinking" message itself.
            payload = {k: v for k, v in payload.items() if k != "flags"}
            self._apply(original, payload, files, record.size_limit, creating=False)
            original.flags &= ~LOADING
            message = original
        else:
            message = self._new_message(record.channel, payload, files, record.size_limit, interaction=record)
        record.followups.append(message)
        if request.query.get("wait") in ("1", "true", "True"):
            return self._ok(message.payload())
        return self._no_content()

    async def _h_get_webhook_message(self, request: web.Request) -> web.StreamResponse:
        record = self._webhook_interaction(request)
        return self._ok(self._interaction_message(record, request.match_info["message_id"]).payload())

    async def _h_edit_webhook_message(self, request: web.Request) -> web.StreamResponse:
        record = self._webhook_interaction(request)
        message = self._interaction_message(record, request.match_info["message_id"])
        payload, files = self._payload_and_files(request)
        self._apply(message, payload, files, record.size_limit, creating=False)
        message.flags &= ~LOADING
        return self._ok(message.payload())

    async def _h_delete_webhook_message(self, request: web.Request) -> web.StreamResponse:
        record = self._webhook_interaction(request)
        self._interaction_message(record, request.match_info["message_id"]).deleted = True
        return self._no_content()

    # ------------------------------------------------------------------ handlers: channels, DMs, guilds

    async def _h_channel(self, request: web.Request) -> web.StreamResponse:
        return self._ok(self._channel(request).payload())

    async def _h_post_message(self, request: web.Request) -> web.StreamResponse:
        channel = self._channel(request)
        self._check_can_send(channel)
        payload, files = self._payload_and_files(request)
        message = self._new_message(channel, payload, files, self._size_limit(channel))
        return self._ok(message.payload())

    def _channel_message(self, request: web.Request) -> tuple[FakeChannel, SentMessage]:
        channel = self._channel(request)
        message = self.messages.get(int(request.match_info["message_id"]))
        # Ephemeral messages exist only behind the interaction token.
        if message is None or message.channel_id != channel.id or message.deleted or message.ephemeral:
            raise _ApiError(404, 10008, "Unknown Message")
        return channel, message

    async def _h_get_message(self, request: web.Request) -> web.StreamResponse:
        return self._ok(self._channel_message(request)[1].payload())

    async def _h_edit_message(self, request: web.Request) -> web.StreamResponse:
        channel, message = self._channel_message(request)
        self._check_can_send(channel)
        if message.author is not self.bot_user:
            raise _ApiError(403, 50005, "Cannot edit a message authored by another user")
        payload, files = self._payload_and_files(request)
        self._apply(message, payload, files, self._size_limit(channel), creating=False)
        return self._ok(message.payload())

    async def _h_delete_message(self, request: web.Request) -> web.StreamResponse:
        self._channel_message(request)[1].deleted = True
        return self._no_content()

    async def _h_create_dm(self, request: web.Request) -> web.StreamResponse:
        body = request[_BODY].json or {}
        user = self.users.get(int(body.get("recipient_id") or 0))
        if user is None or user.bot:
            raise _ApiError(400, 50033, "Invalid Recipient(s)")
        return self._ok(self.dm_channel(user).payload())

    async def _h_guild(self, request: web.Request) -> web.StreamResponse:
        guild = self._guild(request)
        data = guild.rest_payload()
        if request.query.get("with_counts") in ("1", "true", "True"):
            data.update(approximate_member_count=len(guild.members), approximate_presence_count=0)
        return self._ok(data)

    async def _h_guild_channels(self, request: web.Request) -> web.StreamResponse:
        return self._ok([c.payload() for c in self._guild(request).channels])

    async def _h_guild_member(self, request: web.Request) -> web.StreamResponse:
        guild = self._guild(request)
        member = guild.members.get(int(request.match_info["user_id"]))
        if member is None:
            raise _ApiError(404, 10007, "Unknown Member")
        return self._ok(member.payload())


@contextlib.contextmanager
def discord_py_endpoints(api_base: str, gateway_url: str, *, pin_gateway: bool = False) -> Iterator[None]:
    """Point discord.py's library-global REST base and gateway at other URLs for the block.

    discord.py reads ``discord.http.Route.BASE`` for every REST and webhook call and connects
    to ``DiscordWebSocket.DEFAULT_GATEWAY`` (a plain ``Client`` never asks GET /gateway/bot).
    After READY it resumes on ``resume_gateway_url``; ``pin_gateway`` keeps resumes on
    ``gateway_url`` instead, for deployments behind a gateway proxy.
    """
    import yarl
    from discord.gateway import DiscordWebSocket
    from discord.http import Route

    saved_base, saved_gateway = Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY
    saved_receive = DiscordWebSocket.received_message
    Route.BASE = api_base.rstrip("/")
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)
    if pin_gateway:

        async def received_message(self: DiscordWebSocket, msg: Any, /) -> None:
            try:
                await saved_receive(self, msg)
            finally:
                # READY stores resume_gateway_url here; the client reconnects to whatever it holds.
                self.gateway = DiscordWebSocket.DEFAULT_GATEWAY

        DiscordWebSocket.received_message = received_message  # type: ignore[method-assign]
    try:
        yield
    finally:
        Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = saved_base, saved_gateway
        DiscordWebSocket.received_message = saved_receive  # type: ignore[method-assign]
