"""Where discord.py talks to: its REST base and gateway are library globals, set before a client starts."""

from __future__ import annotations

from typing import Any

import yarl
from discord.gateway import DiscordWebSocket
from discord.http import Route

DEFAULT_GATEWAY = "wss://gateway.discord.gg"


class _Pin:
    """Whether resumes stay on the configured gateway instead of Discord's resume_gateway_url."""

    active = False
    installed = False


def configure_endpoints(api_base: str, gateway_url: str) -> None:
    """Point every REST, webhook and gateway connection of this process at the configured URLs.

    READY hands the client a resume_gateway_url that it reconnects to; behind an operator's gateway
    proxy that URL is unreachable, so a non-default gateway also keeps resumes on itself.
    """
    Route.BASE = api_base.rstrip("/")
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)
    _Pin.active = gateway_url.rstrip("/") != DEFAULT_GATEWAY
    if not _Pin.installed:
        _install_pin()


def _install_pin() -> None:
    received = DiscordWebSocket.received_message

    async def received_message(self: DiscordWebSocket, msg: Any, /) -> None:
        try:
            await received(self, msg)
        finally:
            if _Pin.active:
                self.gateway = DiscordWebSocket.DEFAULT_GATEWAY

    DiscordWebSocket.received_message = received_message  # type: ignore[method-assign]
    _Pin.installed = True
