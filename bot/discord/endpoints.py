"""Where discord.py connects: its REST base and gateway are library globals, set while a client runs."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import yarl
from discord.gateway import DiscordWebSocket
from discord.http import Route

DISCORD_GATEWAY = "wss://gateway.discord.gg"


@contextlib.contextmanager
def configured_endpoints(api_base: str, gateway_url: str) -> Iterator[None]:
    """Point every REST, webhook and gateway connection of this process at the configured URLs.

    READY hands the client a resume_gateway_url that it reconnects to; behind an operator's gateway
    proxy that URL is unreachable, so a non-default gateway also keeps resumes on itself.
    """
    saved_base, saved_gateway = Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY
    saved_receive = DiscordWebSocket.received_message
    Route.BASE = api_base.rstrip("/")
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)
    if gateway_url.rstrip("/") != DISCORD_GATEWAY:

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
