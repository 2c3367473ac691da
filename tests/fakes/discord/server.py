"""The fake Discord server: REST API, CDN and gateway on one loopback port, and the controls a test uses."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any
from unittest import mock

from aiohttp import web

from bot.discord import endpoints
from tests.fakes.discord.gateway import Gateway, GatewayConnection
from tests.fakes.discord.interactions import command_data, interaction_create
from tests.fakes.discord.models import (
    APPLICATION_COMMAND,
    AUTOCOMPLETE,
    MESSAGE_COMPONENT,
    MIB,
    MODAL,
    MODAL_SUBMIT,
    CallbackRecord,
    FakeChannel,
    FakeUser,
    InteractionRecord,
    Json,
    SentMessage,
    Upload,
)
from tests.fakes.discord.protocol import ApiError, RequestRecord, error_response, rate_limited
from tests.fakes.discord.rest import RestApi
from tests.fakes.discord.state import GATEWAY_PATH, RESUME_GATEWAY_PATH, DiscordState


class FakeDiscord(DiscordState):
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
        super().__init__(
            token=token,
            app_name=app_name,
            heartbeat_interval=heartbeat_interval,
            token_lifetime=token_lifetime,
            response_deadline=response_deadline,
            privileged_intents=privileged_intents,
        )
        self._rest = RestApi(self)
        self._gateway = Gateway(self)
        self._runner: web.AppRunner | None = None

    @property
    def route_keys(self) -> frozenset[str]:
        """Every REST route served, as ``"METHOD /path/{param}"``."""
        return self._rest.route_keys

    @property
    def connections(self) -> list[GatewayConnection]:
        """Every websocket a client opened, in order."""
        return self._gateway.connections

    @property
    def identify_payloads(self) -> list[Json]:
        return self._gateway.identify_payloads

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        app = web.Application(middlewares=[self._rest.middleware], client_max_size=200 * MIB)
        self._rest.install(app)
        app.router.add_get(GATEWAY_PATH, self._gateway.handle)
        app.router.add_get(RESUME_GATEWAY_PATH, self._gateway.handle)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()

    async def stop(self) -> None:
        await self._gateway.close_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ faults

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
        self._rest.add_fault(
            method,
            route,
            times,
            lambda: rate_limited(route, retry_after, is_global=is_global, cloudflare=cloudflare),
        )

    def fail(self, method: str, route: str, *, status: int, code: int, message: str, times: int = 1) -> None:
        """Answer the next ``times`` calls of a route with a Discord JSON error."""
        self._rest.add_fault(method, route, times, lambda: error_response(ApiError(status, code, message)))

    def deny_channel(self, channel: FakeChannel) -> None:
        """The bot loses Send Messages/Attach Files there: posts and edits get 403 code 50013."""
        self.denied_channels.add(channel.id)

    def allow_channel(self, channel: FakeChannel) -> None:
        self.denied_channels.discard(channel.id)

    def close_dms(self, user: FakeUser) -> None:
        """``user`` does not accept DMs: opening the channel works, sending gets 403 code 50007."""
        self.closed_dms.add(user.id)

    def expire_token(self, interaction: InteractionRecord | str) -> None:
        """Age an interaction token past its 15 minutes: webhook calls get 401 code 50027."""
        record = self.by_token[interaction] if isinstance(interaction, str) else interaction
        record.expired = True

    def expire_attachment_urls(self) -> None:
        """Signed CDN URLs handed out so far stop working, like Discord's do after a while."""
        self.expired_cdn.update(self.cdn)

    # ------------------------------------------------------------------ waiting

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
        await self._gateway.wait_until_ready(timeout)

    # ------------------------------------------------------------------ queries

    def requests_to(self, method: str, route: str) -> list[RequestRecord]:
        return [r for r in self.requests if r.method == method and r.route == route]

    def channel_messages(self, channel: FakeChannel) -> list[SentMessage]:
        return [m for m in self.messages.values() if m.channel_id == channel.id and not m.deleted]

    def dm_messages(self, user: FakeUser) -> list[SentMessage]:
        return self.channel_messages(self.dm_channel(user))

    # ------------------------------------------------------------------ gateway control

    async def dispatch(self, event: str, data: Json) -> None:
        """Send a gateway DISPATCH to the bot; kept for replay if the socket is down (as Discord does)."""
        await self._gateway.dispatch(event, data)

    async def reconnect(self) -> None:
        """Send op 7 RECONNECT: the client must drop the socket and RESUME."""
        await self._gateway.reconnect()

    async def disconnect(self, code: int = 4000) -> None:
        """Drop the socket with a resumable close code; events sent meanwhile are replayed."""
        await self._gateway.disconnect(code)

    async def invalidate_session(self, *, resumable: bool = False) -> None:
        """Send op 9; with ``resumable=False`` the session is gone and the client must IDENTIFY anew."""
        await self._gateway.invalidate_session(resumable=resumable)

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
        data = command_data(self, channel, name, values, focused=None)
        return await self._deliver(interaction_create(self, APPLICATION_COMMAND, user, channel, data, locale=locale))

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
        data = command_data(self, channel, name, options, focused=focused)
        return await self._deliver(interaction_create(self, AUTOCOMPLETE, user, channel, data, locale=locale))

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
        created = interaction_create(self, MESSAGE_COMPONENT, user, channel, data, message=message, locale=locale)
        return await self._deliver(created)

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
        source = interaction.source_message
        created = interaction_create(self, MODAL_SUBMIT, user, interaction.channel, data, message=source, locale=locale)
        return await self._deliver(created)

    async def purchase(self, user: FakeUser, sku: Json) -> Json:
        """``user`` buys the SKU in Discord's store: the entitlement is created and ENTITLEMENT_CREATE sent."""
        entitlement = self.monetization.grant(user.id, int(sku["id"]))
        await self.dispatch("ENTITLEMENT_CREATE", dict(entitlement))
        return entitlement

    async def _deliver(self, interaction: InteractionRecord) -> InteractionRecord:
        """Send the interaction to the bot over the gateway, as Discord does."""
        await self.dispatch("INTERACTION_CREATE", interaction.payload)
        return interaction


@contextlib.contextmanager
def discord_py_endpoints(api_base: str, gateway_url: str, *, pin_gateway: bool = False) -> Iterator[None]:
    """Point discord.py at a fake for the block, through the product's own endpoint switch.

    The product keeps resumes on any gateway but Discord's own; unless ``pin_gateway``, the fake's
    gateway plays Discord's own here, so the client resumes on READY's ``resume_gateway_url``.
    """
    with contextlib.ExitStack() as stack:
        if not pin_gateway:
            stack.enter_context(mock.patch.object(endpoints, "DISCORD_GATEWAY", gateway_url.rstrip("/")))
        stack.enter_context(endpoints.configured_endpoints(api_base, gateway_url))
        yield
