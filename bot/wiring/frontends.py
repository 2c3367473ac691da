"""The chat front ends for the configured tokens, and their start-up failures as one line for the operator."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from bot.errors import OperatorError
from bot.frontend import FrontEnd
from bot.service.use_cases import LikenessService
from bot.settings import Settings, TelegramSettings

log = logging.getLogger(__name__)


def build_frontends(settings: Settings, service: LikenessService) -> dict[str, FrontEnd]:
    """A front end for every platform whose token is set, keyed by platform."""
    frontends: dict[str, FrontEnd] = {}
    if settings.telegram.token is not None:
        from bot.telegram.frontend import TelegramFrontEnd

        with _telegram_failures(settings.telegram):
            frontends["telegram"] = TelegramFrontEnd(settings.telegram, service)
    if settings.discord.token is not None:
        from bot.discord.frontend import DiscordFrontEnd

        frontends["discord"] = DiscordFrontEnd(settings.discord, service)
    return frontends


async def start_frontends(settings: Settings, frontends: dict[str, FrontEnd]) -> None:
    """Start each front end; one that cannot start raises an OperatorError (the caller stops them all)."""
    for name, frontend in frontends.items():
        if name == "telegram":
            with _telegram_failures(settings.telegram):
                await frontend.start()
        else:
            await frontend.start()  # the Discord front end raises its own operator error
        log.info("%s front end started", name)
    if not frontends:
        log.warning("no front end configured: set LIKENESS_TELEGRAM__TOKEN or LIKENESS_DISCORD__TOKEN")


async def stop_frontends(frontends: dict[str, FrontEnd]) -> None:
    for frontend in frontends.values():
        try:
            await frontend.stop()
        except Exception:
            log.exception("front end %s did not stop cleanly", frontend.platform)


@contextlib.contextmanager
def _telegram_failures(settings: TelegramSettings) -> Iterator[None]:
    """python-telegram-bot's start-up errors (a rejected token, an unreachable server) as operator errors."""
    from telegram.error import BadRequest, InvalidToken, NetworkError, TelegramError

    try:
        yield
    except InvalidToken:
        # Its own message quotes the token.
        raise OperatorError("Telegram rejected the bot token (LIKENESS_TELEGRAM__TOKEN)") from None
    except BadRequest as exc:  # a NetworkError to python-telegram-bot, but the server answered
        if settings.webhook_url:
            raise OperatorError(
                f"Telegram refused the webhook (LIKENESS_TELEGRAM__WEBHOOK_URL): {exc.message}"
            ) from None
        raise OperatorError(f"Telegram refused the start: {exc.message}") from None
    except NetworkError as exc:
        raise OperatorError(
            f"cannot reach the Telegram Bot API at {settings.base_url} (LIKENESS_TELEGRAM__BASE_URL): {exc.message}"
        ) from None
    except TelegramError as exc:
        raise OperatorError(f"Telegram refused the start: {exc.message}") from None
    except OSError as exc:  # the webhook server could not bind its address
        reason = exc.strerror or str(exc)
        raise OperatorError(
            f"LIKENESS_TELEGRAM__WEBHOOK_LISTEN: cannot listen on {settings.webhook_listen}: {reason}"
        ) from None
