"""Where updates wait for the bot, and how they reach it: long polling or a webhook."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from tests.fakes.telegram.models import JSON, WebhookDelivery
from tests.fakes.telegram.protocol import ApiError, bad

# Telegram leaves these update types out unless a bot asks for them in allowed_updates.
_OPT_IN_UPDATES = frozenset({"chat_member", "message_reaction", "message_reaction_count"})


@dataclass
class Webhook:
    url: str
    secret_token: str | None
    max_connections: int
    allowed_updates: list[str] | None
    ip_address: str | None
    last_error_date: int | None = None
    last_error_message: str | None = None


class Signal:
    """Wakes every current waiter; notify() works from plain code, unlike asyncio.Condition."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    def waiter(self) -> asyncio.Event:
        """Take this before checking the condition, so a change in between is not missed."""
        return self._event


async def wait_until(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), max(seconds, 0.0))


def is_loopback(url: str) -> bool:
    return (urlsplit(url).hostname or "") in ("127.0.0.1", "localhost", "::1")


class Updates:
    """The updates not yet confirmed by the bot, served by getUpdates or pushed to the webhook in order."""

    def __init__(self, activity: Signal, webhook_retry_delay: float) -> None:
        self.pending: list[JSON] = []
        self.webhook: Webhook | None = None
        self.deliveries: list[WebhookDelivery] = []
        self.waiting_polls = 0
        self._activity = activity
        self.webhook_retry_delay = webhook_retry_delay
        self._changed = Signal()
        self._allowed: frozenset[str] | None = None
        self._poll_generation = 0
        self._closing = False
        self._session: aiohttp.ClientSession | None = None
        self._pump: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        self._pump = asyncio.create_task(self._webhook_pump())

    async def stop(self) -> None:
        self._closing = True
        self._changed.notify()
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        if self._session is not None:
            await self._session.close()

    def push(self, update: JSON) -> None:
        self.pending.append(update)
        self._changed.notify()
        self._activity.notify()

    def _is_allowed(self, update: JSON) -> bool:
        kind = next(key for key in update if key != "update_id")
        return kind in self._allowed if self._allowed else kind not in _OPT_IN_UPDATES

    def _deliverable(self, limit: int) -> list[JSON]:
        # Telegram never keeps updates of types the bot did not ask for.
        self.pending = [update for update in self.pending if self._is_allowed(update)]
        return self.pending[:limit]

    def _confirm(self, offset: int) -> None:
        if offset > 0:
            self.pending = [update for update in self.pending if update["update_id"] >= offset]
        elif offset < 0:
            self.pending = self.pending[offset:]

    def set_allowed(self, allowed: Any) -> None:
        if allowed is not None:
            if not isinstance(allowed, list):
                raise bad("can't parse allowed_updates JSON array")
            self._allowed = frozenset(allowed) or None

    async def poll(self, offset: int, limit: int, wait_s: float) -> list[JSON]:
        """getUpdates: confirm what came before ``offset``, then wait up to ``wait_s`` for updates."""
        self._confirm(offset)
        # A newer getUpdates ends the one still waiting, as on Telegram.
        self._poll_generation += 1
        self._changed.notify()
        generation = self._poll_generation
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        self.waiting_polls += 1
        self._activity.notify()
        try:
            while True:
                waiter = self._changed.waiter()
                if generation != self._poll_generation:
                    raise ApiError(
                        409,
                        "Conflict: terminated by other getUpdates request; "
                        "make sure that only one bot instance is running",
                    )
                batch = self._deliverable(limit)
                remaining = deadline - loop.time()
                if batch or remaining <= 0 or self._closing or self.webhook is not None:
                    return batch
                await wait_until(waiter, remaining)
        finally:
            self.waiting_polls -= 1

    def set_webhook(self, hook: Webhook) -> None:
        self.webhook = hook
        self._poll_generation += 1
        self._changed.notify()

    def delete_webhook(self) -> bool:
        """Whether a webhook was set."""
        was_set, self.webhook = self.webhook is not None, None
        self._changed.notify()
        return was_set

    def webhook_info(self) -> JSON:
        hook = self.webhook
        info: JSON = {"url": hook.url if hook else "", "has_custom_certificate": False}
        info["pending_update_count"] = len(self.pending)
        if hook is not None:
            info["max_connections"] = hook.max_connections
            for key in ("allowed_updates", "ip_address", "last_error_date", "last_error_message"):
                if getattr(hook, key) is not None:
                    info[key] = getattr(hook, key)
        return info

    async def _webhook_pump(self) -> None:
        """Push queued updates to the webhook one at a time, in order, retrying failures with backoff."""
        failures = 0
        while not self._closing:
            waiter = self._changed.waiter()
            hook = self.webhook
            batch = self._deliverable(1) if hook is not None else []
            if hook is None or not batch:
                await waiter.wait()
                continue
            update = batch[0]
            status, error = await self.post(hook.url, update, hook.secret_token)
            self.deliveries.append(WebhookDelivery(update["update_id"], status, error))
            if error is None:
                failures = 0
                self.pending = [queued for queued in self.pending if queued is not update]
            else:
                failures += 1
                hook.last_error_date = int(time.time())
                hook.last_error_message = error
            self._activity.notify()
            if error is not None:
                await asyncio.sleep(min(self.webhook_retry_delay * 2 ** (failures - 1), 5.0))

    async def post(self, url: str, update: JSON, secret: str | None) -> tuple[int | None, str | None]:
        """POST one update to ``url``: the HTTP status, and what went wrong as Telegram reports it."""
        if not is_loopback(url):
            return None, "Connection refused: only webhooks on 127.0.0.1 are reachable in tests"
        assert self._session is not None
        headers = {"Content-Type": "application/json"}
        if secret is not None:
            headers["X-Telegram-Bot-Api-Secret-Token"] = secret
        try:
            async with self._session.post(url, data=json.dumps(update), headers=headers) as response:
                await response.read()
                if 200 <= response.status < 300:
                    return response.status, None
                return (
                    response.status,
                    f"Wrong response from the webhook: {response.status} {response.reason}",
                )
        except aiohttp.ClientConnectorError:
            return None, "Connection refused"
        except TimeoutError:
            return None, "Read timeout expired"
        except aiohttp.ClientError as error:
            return None, f"Connection failed: {type(error).__name__}"
