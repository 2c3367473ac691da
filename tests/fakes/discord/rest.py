"""The fake Discord REST API: routes, authentication, the request log, and the handlers behind them."""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from tests.fakes.discord.interactions import register_command
from tests.fakes.discord.models import (
    ALLOWED_CALLBACKS,
    APPLICATION_COMMAND,
    CHANNEL_MESSAGE,
    DEFERRED_CHANNEL_MESSAGE,
    DEFERRED_UPDATE_MESSAGE,
    EPHEMERAL,
    LOADING,
    MODAL,
    UPDATE_MESSAGE,
    CallbackRecord,
    FakeChannel,
    FakeGuild,
    InteractionRecord,
    Json,
    SentMessage,
)
from tests.fakes.discord.protocol import (
    BODY,
    ApiError,
    Body,
    Fault,
    FilePart,
    RequestRecord,
    error_response,
    form_error,
    no_content,
    ok,
    read_body,
)
from tests.fakes.discord.state import API_PREFIX, DiscordState

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class RestApi:
    """The REST routes discord.py calls, with per-route fault injection, and the CDN behind attachment URLs."""

    def __init__(self, state: DiscordState) -> None:
        self.state = state
        self.routes = self._route_table()
        self.route_keys = frozenset(f"{method} {path}" for method, path, _ in self.routes)
        self._faults: list[Fault] = []

    def install(self, app: web.Application) -> None:
        """Add the API routes, the CDN and a catch-all that reports what the fake does not serve."""
        for method, path, handler in self.routes:
            app.router.add_route(method, API_PREFIX + path, handler)
        app.router.add_get("/attachments/{channel_id}/{attachment_id}/{filename}", self._h_cdn)
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", self._h_unknown)

    # ------------------------------------------------------------------ faults

    def check_route(self, method: str, route: str) -> None:
        if f"{method} {route}" not in self.route_keys:
            raise ValueError(f"no route {method} {route}; known: {sorted(self.route_keys)}")

    def add_fault(self, method: str, route: str, times: int, respond: Callable[[], web.Response]) -> None:
        """Answer the next ``times`` calls of a route with ``respond()`` instead of serving them."""
        self.check_route(method, route)
        self._faults.append(Fault(method, route, times, respond))

    def _take_fault(self, method: str, route: str) -> web.Response | None:
        for fault in self._faults:
            if fault.method == method and fault.route == route and fault.remaining > 0:
                fault.remaining -= 1
                return fault.respond()
        return None

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
            ("GET", app + "/skus", self._h_skus),
            ("GET", app + "/entitlements", self._h_entitlements),
            ("GET", app + "/entitlements/{entitlement_id}", self._h_entitlement),
            ("POST", app + "/entitlements/{entitlement_id}/consume", self._h_consume),
        ]

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        canonical = resource.canonical if resource is not None else request.path
        if not canonical.startswith(API_PREFIX):
            return await handler(request)
        route: str | None = canonical[len(API_PREFIX) :]
        route = None if route == "/{tail}" else route
        body = Body()
        response: web.StreamResponse | None
        try:
            body = await read_body(request)
            request[BODY] = body
            response = self._take_fault(request.method, route) if route else None
            if response is None:
                self._check_auth(request, route)
                response = await handler(request)
        except ApiError as error:
            response = error_response(error)
        except Exception as exc:  # a gap in the fake must fail the test, not look like Discord
            self.state.server_errors.append(f"{request.method} {request.path}: {exc!r}")
            response = error_response(ApiError(400, 0, f"fake server error: {exc!r}"))
        self.state.requests.append(
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
        await self.state.notify()
        return response

    def _check_auth(self, request: web.Request, route: str | None) -> None:
        if route is None or route.startswith(("/webhooks/", "/interactions/")):
            return
        if request.headers.get("Authorization") != f"Bot {self.state.token}":
            raise ApiError(401, 0, "401: Unauthorized")

    async def _h_unknown(self, request: web.Request) -> web.StreamResponse:
        self.state.server_errors.append(f"route not served by the fake: {request.method} {request.path}")
        raise ApiError(404, 0, "404: Not Found")

    async def _h_cdn(self, request: web.Request) -> web.StreamResponse:
        attachment = self.state.cdn.get(int(request.match_info["attachment_id"]))
        if attachment is None or attachment.id in self.state.expired_cdn or not request.query.get("hm"):
            return web.Response(status=404, text="This content is no longer available.")
        return web.Response(body=attachment.data, content_type=attachment.content_type or "application/octet-stream")

    # ------------------------------------------------------------------ lookups

    def _app_check(self, request: web.Request) -> None:
        if request.match_info["application_id"] != str(self.state.application_id):
            raise ApiError(404, 10002, "Unknown Application")

    def _channel(self, request: web.Request) -> FakeChannel:
        channel = self.state.channels.get(int(request.match_info["channel_id"]))
        if channel is None:
            raise ApiError(404, 10003, "Unknown Channel")
        return channel

    def _guild(self, request: web.Request) -> FakeGuild:
        guild = self.state.guilds.get(int(request.match_info["guild_id"]))
        if guild is None:
            raise ApiError(404, 10004, "Unknown Guild")
        return guild

    def _webhook_interaction(self, request: web.Request) -> InteractionRecord:
        record = self.state.by_token.get(request.match_info["interaction_token"])
        if request.match_info["application_id"] != str(self.state.application_id) or record is None:
            raise ApiError(404, 10015, "Unknown Webhook")
        if record.expired or time.monotonic() - record.created_at > self.state.token_lifetime:
            raise ApiError(401, 50027, "Invalid Webhook Token")
        return record

    @staticmethod
    def _interaction_message(record: InteractionRecord, message_id: str) -> SentMessage:
        candidates = [record.original, *record.followups]
        for message in candidates:
            if message is None or message.deleted:
                continue
            if (message_id == "@original" and message is record.original) or message_id == str(message.id):
                return message
        raise ApiError(404, 10008, "Unknown Message")

    def _payload_and_files(self, request: web.Request) -> tuple[Json, tuple[FilePart, ...]]:
        body: Body = request[BODY]
        payload = body.json if isinstance(body.json, dict) else {}
        return payload, body.files

    # ------------------------------------------------------------------ handlers: identity

    async def _h_gateway_info(self, request: web.Request) -> web.StreamResponse:
        data: Json = {"url": self.state.gateway_url}
        if request.path.endswith("/bot"):
            data["shards"] = 1
            data["session_start_limit"] = {
                "total": 1000,
                "remaining": 999,
                "reset_after": 14_400_000,
                "max_concurrency": 1,
            }
        return ok(data)

    async def _h_me(self, request: web.Request) -> web.StreamResponse:
        return ok({**self.state.bot_user.payload(), "verified": True, "mfa_enabled": False, "flags": 0, "bio": ""})

    async def _h_user(self, request: web.Request) -> web.StreamResponse:
        user = self.state.users.get(int(request.match_info["user_id"]))
        if user is None:
            raise ApiError(404, 10013, "Unknown User")
        return ok(user.payload())

    async def _h_application(self, request: web.Request) -> web.StreamResponse:
        return ok(
            {
                "id": str(self.state.application_id),
                "name": self.state.bot_user.username,
                "icon": None,
                "description": "",
                "summary": "",
                "type": None,
                "bot_public": False,
                "bot_require_code_grant": False,
                "verify_key": secrets.token_hex(32),
                "owner": self.state.owner.payload(),
                "team": None,
                "flags": self.state.application_flags,
                "bot": self.state.bot_user.payload(),
                "tags": [],
                "approximate_guild_count": len(self.state.guilds),
                "interactions_endpoint_url": None,
                "redirect_uris": [],
            }
        )

    # ------------------------------------------------------------------ handlers: commands

    def _command_store(self, request: web.Request) -> tuple[int | None, list[Json]]:
        self._app_check(request)
        if "guild_id" in request.match_info:
            guild = self._guild(request)
            return guild.id, self.state.guild_commands.setdefault(guild.id, [])
        return None, self.state.global_commands

    async def _h_get_commands(self, request: web.Request) -> web.StreamResponse:
        _, store = self._command_store(request)
        return ok(store)

    async def _h_put_commands(self, request: web.Request) -> web.StreamResponse:
        guild_id, store = self._command_store(request)
        body = request[BODY].json or []
        if guild_id is None and len(body) > 100:
            raise form_error("_", "BASE_TYPE_MAX_LENGTH", "Must be 100 or fewer in length.")
        commands = [register_command(self.state, guild_id, raw, i) for i, raw in enumerate(body)]
        store[:] = commands
        return ok(commands)

    async def _h_post_command(self, request: web.Request) -> web.StreamResponse:
        guild_id, store = self._command_store(request)
        command = register_command(self.state, guild_id, request[BODY].json or {}, 0)
        store[:] = [c for c in store if c["name"] != command["name"]] + [command]
        return ok(command, status=201)

    # ------------------------------------------------------------------ handlers: interactions

    async def _h_callback(self, request: web.Request) -> web.StreamResponse:
        record = self.state.interactions.get(int(request.match_info["interaction_id"]))
        if record is None or record.token != request.match_info["interaction_token"] or record.expired:
            raise ApiError(404, 10062, "Unknown interaction")
        if record.callbacks:
            raise ApiError(400, 40060, "Interaction has already been acknowledged.")
        deadline = self.state.response_deadline
        if deadline is not None and time.monotonic() - record.created_at > deadline:
            raise ApiError(404, 10062, "Unknown interaction")
        payload, files = self._payload_and_files(request)
        kind = int(payload.get("type") or 0)
        data: Json = payload.get("data") or {}
        if kind not in ALLOWED_CALLBACKS[record.type]:
            raise form_error(
                "type",
                "BASE_TYPE_CHOICES",
                f"Value must be one of {sorted(ALLOWED_CALLBACKS[record.type])}.",
            )

        message: SentMessage | None = None
        if kind == CHANNEL_MESSAGE:
            message_type = 20 if record.type == APPLICATION_COMMAND else 0
            message = self.state.new_message(
                record.channel, data, files, record.size_limit, message_type=message_type, interaction=record
            )
            record.original = message
        elif kind == DEFERRED_CHANNEL_MESSAGE:
            flags = (int(data.get("flags") or 0) & EPHEMERAL) | LOADING
            message_type = 20 if record.type == APPLICATION_COMMAND else 0
            message = self.state.new_message(
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
                raise ApiError(400, 50035, "Invalid Form Body")
            record.original = record.source_message
            if kind == UPDATE_MESSAGE:
                message = record.source_message
                self.state.apply(message, data, files, record.size_limit, creating=False)
        elif kind == MODAL and not (data.get("custom_id") and data.get("components")):
            raise form_error("data.custom_id", "BASE_TYPE_REQUIRED", "This field is required")
        record.callbacks.append(CallbackRecord(kind, data, message))

        if request.query.get("with_response") not in ("1", "true", "True"):
            return no_content()
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
        return ok(response)

    async def _h_followup(self, request: web.Request) -> web.StreamResponse:
        record = self._webhook_interaction(request)
        if not record.callbacks:
            raise ApiError(404, 10015, "Unknown Webhook")
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
            self.state.apply(original, payload, files, record.size_limit, creating=False)
            original.flags &= ~LOADING
            message = original
        else:
            message = self.state.new_message(record.channel, payload, files, record.size_limit, interaction=record)
        record.followups.append(message)
        if request.query.get("wait") in ("1", "true", "True"):
            return ok(message.payload())
        return no_content()

    async def _h_get_webhook_message(self, request: web.Request) -> web.StreamResponse:
        record = self._webhook_interaction(request)
        return ok(self._interaction_message(record, request.match_info["message_id"]).payload())

    async def _h_edit_webhook_message(self, request: web.Request) -> web.StreamResponse:
        record = self._webhook_interaction(request)
        message = self._interaction_message(record, request.match_info["message_id"])
        payload, files = self._payload_and_files(request)
        self.state.apply(message, payload, files, record.size_limit, creating=False)
        message.flags &= ~LOADING
        return ok(message.payload())

    async def _h_delete_webhook_message(self, request: web.Request) -> web.StreamResponse:
        record = self._webhook_interaction(request)
        self._interaction_message(record, request.match_info["message_id"]).deleted = True
        return no_content()

    # ------------------------------------------------------------------ handlers: channels, DMs, guilds

    async def _h_channel(self, request: web.Request) -> web.StreamResponse:
        return ok(self._channel(request).payload())

    async def _h_post_message(self, request: web.Request) -> web.StreamResponse:
        channel = self._channel(request)
        self.state.check_can_send(channel)
        payload, files = self._payload_and_files(request)
        message = self.state.new_message(channel, payload, files, self.state.size_limit(channel))
        return ok(message.payload())

    def _channel_message(self, request: web.Request) -> tuple[FakeChannel, SentMessage]:
        channel = self._channel(request)
        message = self.state.messages.get(int(request.match_info["message_id"]))
        # Ephemeral messages exist only behind the interaction token.
        if message is None or message.channel_id != channel.id or message.deleted or message.ephemeral:
            raise ApiError(404, 10008, "Unknown Message")
        return channel, message

    async def _h_get_message(self, request: web.Request) -> web.StreamResponse:
        return ok(self._channel_message(request)[1].payload())

    async def _h_edit_message(self, request: web.Request) -> web.StreamResponse:
        channel, message = self._channel_message(request)
        self.state.check_can_send(channel)
        if message.author is not self.state.bot_user:
            raise ApiError(403, 50005, "Cannot edit a message authored by another user")
        payload, files = self._payload_and_files(request)
        self.state.apply(message, payload, files, self.state.size_limit(channel), creating=False)
        return ok(message.payload())

    async def _h_delete_message(self, request: web.Request) -> web.StreamResponse:
        self._channel_message(request)[1].deleted = True
        return no_content()

    async def _h_create_dm(self, request: web.Request) -> web.StreamResponse:
        body = request[BODY].json or {}
        user = self.state.users.get(int(body.get("recipient_id") or 0))
        if user is None or user.bot:
            raise ApiError(400, 50033, "Invalid Recipient(s)")
        return ok(self.state.dm_channel(user).payload())

    async def _h_guild(self, request: web.Request) -> web.StreamResponse:
        guild = self._guild(request)
        data = guild.rest_payload()
        if request.query.get("with_counts") in ("1", "true", "True"):
            data.update(approximate_member_count=len(guild.members), approximate_presence_count=0)
        return ok(data)

    async def _h_guild_channels(self, request: web.Request) -> web.StreamResponse:
        return ok([c.payload() for c in self._guild(request).channels])

    # ------------------------------------------------------------------ handlers: monetization

    async def _h_skus(self, request: web.Request) -> web.StreamResponse:
        self._app_check(request)
        return ok(list(self.state.monetization.skus.values()))

    async def _h_entitlements(self, request: web.Request) -> web.StreamResponse:
        self._app_check(request)
        return ok(self.state.monetization.listing(dict(request.query)))

    async def _h_entitlement(self, request: web.Request) -> web.StreamResponse:
        self._app_check(request)
        return ok(self.state.monetization.get(int(request.match_info["entitlement_id"])))

    async def _h_consume(self, request: web.Request) -> web.StreamResponse:
        self._app_check(request)
        self.state.monetization.consume(int(request.match_info["entitlement_id"]))
        return no_content()

    async def _h_guild_member(self, request: web.Request) -> web.StreamResponse:
        guild = self._guild(request)
        member = guild.members.get(int(request.match_info["user_id"]))
        if member is None:
            raise ApiError(404, 10007, "Unknown Member")
        return ok(member.payload())
