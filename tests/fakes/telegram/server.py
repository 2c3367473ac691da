"""The fake Bot API server: HTTP routing, the methods a bot calls, and the controls a test uses."""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import math
import re
import secrets
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urlsplit

from aiohttp import web

from tests.fakes.telegram.chats import Chats
from tests.fakes.telegram.formatting import auto_entities, format_text, u16
from tests.fakes.telegram.media import FileStore, check_photo, document_names, image_size
from tests.fakes.telegram.models import (
    CHANNEL_BOT,
    GROUP_ANONYMOUS_BOT,
    JSON,
    SERVICE_NOTIFICATIONS,
    ApiCall,
    BotMessage,
    CallbackAnswer,
    StoredFile,
    TgChat,
    TgUser,
    WebhookDelivery,
)
from tests.fakes.telegram.payments import Checkout, Invoice, Payments, payment_fields
from tests.fakes.telegram.protocol import (
    CALLBACK_ANSWER_LIMIT,
    CALLBACK_DATA_LIMIT,
    CAPTION_LIMIT,
    DOWNLOAD_LIMIT,
    MAX_BODY,
    TEXT_LIMIT,
    UPLOAD_LIMIT,
    ApiError,
    Params,
    Reply,
    UploadedFile,
    bad,
    error_response,
    read_params,
)
from tests.fakes.telegram.updates import Signal, Updates, Webhook, is_loopback, wait_until

T = TypeVar("T")

_CHAT_ACTIONS = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)
_BUTTON_ACTIONS = frozenset(
    {
        "url",
        "callback_data",
        "web_app",
        "login_url",
        "switch_inline_query",
        "switch_inline_query_current_chat",
        "switch_inline_query_chosen_chat",
        "copy_text",
        "callback_game",
        "pay",
    }
)
_NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are exactly "
    "the same as a current content and reply markup of the message"
)
_SECRET_RE = re.compile(r"[A-Za-z0-9_-]{1,256}")
_COMMAND_RE = re.compile(r"[a-z0-9_]{1,32}")
_API_ROUTE = re.compile(r"/bot([^/]+)/([A-Za-z0-9_]*)")
_FILE_ROUTE = re.compile(r"/file/bot([^/]+)/(.+)")


@dataclass
class _Fault:
    code: int
    description: str
    retry_after: int | None


class _Unset:
    pass


_UNSET = _Unset()


class FakeTelegram:
    """A Bot API server on 127.0.0.1 with simulated users, recorded bot output and fault injection.

    Use ``base_url`` and ``base_file_url`` with PTB's ``ApplicationBuilder``. Updates injected through
    the helpers are served by getUpdates (a real long poll) or, while a webhook is set, pushed to it.
    """

    def __init__(
        self,
        token: str | None = None,
        *,
        bot_username: str = "likeness_test_bot",
        bot_name: str = "Likeness",
        webhook_retry_delay: float = 0.2,
    ) -> None:
        bot_id = int(token.split(":", 1)[0]) if token else 7_100_000_001
        self.token = token or f"{bot_id}:AA{secrets.token_urlsafe(25)[:33]}"
        self.bot = TgUser(bot_id, bot_name, username=bot_username, language_code=None, is_bot=True)

        self.calls: list[ApiCall] = []
        self.flood_counts: Counter[str] = Counter()
        self.callback_answers: dict[str, CallbackAnswer] = {}
        self.deleted: list[tuple[int, int]] = []
        self.downloads: list[str] = []

        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._activity = Signal()
        self._updates = Updates(self._activity, webhook_retry_delay)

        self._update_ids = itertools.count(500_000_001)
        self._query_ids = itertools.count(4_000_000_000_000_000_001)
        self._chats = Chats()
        self._cursor: dict[int, int] = {}
        self._actions: dict[int, list[str]] = {}
        self._files = FileStore()
        self._faults: dict[str, deque[_Fault]] = {}
        self._blocked: set[int] = set()
        self._flood: tuple[int, float] | None = None
        self._chat_sends: dict[int, deque[float]] = {}
        self._open_queries: dict[str, JSON] = {}
        self._commands: dict[tuple[str, str], list[JSON]] = {}
        self.payments = Payments()
        self._chat_admins: dict[int, list[int]] = {}  # group -> its administrators, its creator first

        handlers: dict[str, Callable[[Params], Awaitable[Any]]] = {
            "getMe": self._get_me,
            "logOut": self._log_out,
            "close": self._log_out,
            "getUpdates": self._get_updates,
            "setWebhook": self._set_webhook,
            "deleteWebhook": self._delete_webhook,
            "getWebhookInfo": self._get_webhook_info,
            "sendMessage": self._send_message,
            "sendPhoto": self._send_photo,
            "sendDocument": self._send_document,
            "sendMediaGroup": self._send_media_group,
            "sendChatAction": self._send_chat_action,
            "editMessageText": self._edit_message_text,
            "editMessageCaption": self._edit_message_caption,
            "editMessageReplyMarkup": self._edit_message_reply_markup,
            "deleteMessage": self._delete_message,
            "answerCallbackQuery": self._answer_callback_query,
            "getFile": self._get_file,
            "sendInvoice": self._send_invoice,
            "answerPreCheckoutQuery": self._answer_pre_checkout_query,
            "refundStarPayment": self._refund_star_payment,
            "getChatMember": self._get_chat_member,
            "setMyCommands": self._set_my_commands,
            "getMyCommands": self._get_my_commands,
            "deleteMyCommands": self._delete_my_commands,
        }
        # Telegram matches method names case-insensitively.
        self._methods = {name.lower(): (name, handler) for name, handler in handlers.items()}

    # -- lifecycle

    async def start(self) -> None:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        # Cancelling handlers when the client goes away ends abandoned long polls at once.
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])
        await self._updates.start()

    async def stop(self) -> None:
        await self._updates.stop()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeTelegram:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        if self._port is None:
            raise RuntimeError("FakeTelegram is not started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def base_url(self) -> str:
        """For PTB's base_url: the token is appended to it."""
        return f"{self.url}/bot"

    @property
    def base_file_url(self) -> str:
        """For PTB's base_file_url: the token is appended to it."""
        return f"{self.url}/file/bot"

    # -- simulated users and chats

    def user(
        self,
        first_name: str = "Ann",
        *,
        last_name: str | None = None,
        username: str | None = None,
        language_code: str | None = "en",
    ) -> TgUser:
        """A new user with a fresh id."""
        return self._chats.new_user(first_name, last_name, username, language_code)

    def private_chat(self, user: TgUser) -> TgChat:
        """The user's private chat with the bot (the same object on every call)."""
        return self._chats.private_chat(user)

    def group(self, title: str = "Likeness testers", *, supergroup: bool = True, username: str | None = None) -> TgChat:
        return self._chats.group(title, supergroup=supergroup, username=username)

    def channel(self, title: str = "Likeness news", *, username: str | None = None) -> TgChat:
        """A channel with the bot as an admin: its posts reach the bot as channel_post updates."""
        return self._chats.channel(title, username=username)

    # -- injecting what users do

    def send_text(self, user: TgUser, chat: TgChat, text: str, *, reply_to: BotMessage | int | None = None) -> JSON:
        """A user's text message; commands, mentions and links get entities as Telegram adds them."""
        content: JSON = {"text": text}
        if entities := auto_entities(text):
            content["entities"] = entities
        return self._user_message(user, chat, content, reply_to)

    def send_photo(
        self,
        user: TgUser,
        chat: TgChat,
        image_bytes: bytes,
        caption: str | None = None,
        media_group_id: str | None = None,
        *,
        file_size: int | None = None,
        dimensions: tuple[int, int] | None = None,
    ) -> JSON:
        """A user's photo as the list of sizes Telegram makes; the largest holds exactly these bytes.

        ``file_size`` overrides the size reported for the largest one (getFile refuses over 20 MB);
        ``dimensions`` lets bytes that are no image through (Telegram itself would never send those).
        """
        size = dimensions or image_size(image_bytes)
        if size is None:
            raise ValueError("image_bytes is not an image Pillow can read; pass dimensions= to send it anyway")
        content: JSON = {"photo": self._files.photo_sizes(image_bytes, size, file_size)}
        content.update(self._caption_fields(caption))
        if media_group_id is not None:
            content["media_group_id"] = media_group_id
        return self._user_message(user, chat, content, None)

    def send_album(self, user: TgUser, chat: TgChat, images: Iterable[bytes], caption: str | None = None) -> list[JSON]:
        """An album: one update per photo, sharing a media_group_id; the caption goes on the first."""
        group_id = str(next(self._update_ids) * 7919)
        return [
            self.send_photo(user, chat, data, caption if index == 0 else None, group_id)
            for index, data in enumerate(images)
        ]

    def send_document(
        self,
        user: TgUser,
        chat: TgChat,
        data: bytes,
        filename: str,
        mime_type: str,
        caption: str | None = None,
        *,
        file_size: int | None = None,
    ) -> JSON:
        """A user's file sent as a document (an image sent "as a file" arrives this way)."""
        content: JSON = {"document": self._files.document(data, filename, mime_type, file_size)}
        content.update(self._caption_fields(caption))
        return self._user_message(user, chat, content, None)

    def send_on_behalf_of(
        self,
        sender_chat: TgChat,
        chat: TgChat,
        text: str | None = None,
        *,
        photo: bytes | None = None,
        caption: str | None = None,
        automatic_forward: bool = False,
    ) -> JSON:
        """A message in a group sent on behalf of a chat, with the placeholder sender Telegram puts in "from".

        ``sender_chat`` is the group itself for an anonymous admin, or a channel: a user posting as their
        channel, or with ``automatic_forward`` the channel's post copied into its linked discussion group."""
        chat = self._chats.chat_of(chat)
        if chat.type not in ("group", "supergroup"):
            raise ValueError("only group messages are sent on behalf of a chat; a channel's own are channel posts")
        if (sender_chat.id == chat.id) == (sender_chat.type == "channel"):
            raise ValueError("a message is sent on behalf of its own group (anonymous admin) or of a channel")
        content = self._content(text, photo, caption)
        content["sender_chat"] = sender_chat.to_json()
        if sender_chat.id == chat.id:
            placeholder = GROUP_ANONYMOUS_BOT
        elif automatic_forward:
            placeholder = SERVICE_NOTIFICATIONS
            content["is_automatic_forward"] = True
            content["forward_origin"] = {
                "type": "channel",
                "chat": sender_chat.to_json(),
                "message_id": 1,
                "date": int(time.time()),
            }
        else:
            placeholder = CHANNEL_BOT
        return self._user_message(placeholder, chat, content, None)

    def post_in_channel(
        self, channel: TgChat, text: str | None = None, *, photo: bytes | None = None, caption: str | None = None
    ) -> JSON:
        """A post in a channel: a channel_post update, with the channel as sender_chat and no "from"."""
        channel = self._chats.chat_of(channel)
        if channel.type != "channel":
            raise ValueError(f"chat {channel.id} is not a channel")
        message = self._chats.new_message(channel, None)
        message["sender_chat"] = channel.to_json()
        message.update(self._content(text, photo, caption))
        self._chats.keep(channel.id, message)
        self.inject_update("channel_post", message)
        return message

    def edit_message(self, message: JSON, *, text: str | None = None, caption: str | None = None) -> JSON:
        """Its sender edits a message: an edited_message update (edited_channel_post in a channel) that
        carries the whole message as it is now, with edit_date."""
        edited = copy.deepcopy(message)
        if text is not None:
            if "text" not in edited:
                raise ValueError("the message has no text to edit")
            edited["text"] = text
            edited.pop("entities", None)
            if entities := auto_entities(text):
                edited["entities"] = entities
        if caption is not None:
            edited.pop("caption_entities", None)
            edited.update(self._caption_fields(caption))
        edited["edit_date"] = int(time.time())
        chat_id = int(edited["chat"]["id"])
        self._chats.keep(chat_id, edited)
        channel = edited["chat"]["type"] == "channel"
        self.inject_update("edited_channel_post" if channel else "edited_message", edited)
        return edited

    def press_button(self, user: TgUser, message: BotMessage, callback_data: str, *, check: bool = True) -> str:
        """A press on an inline button of a bot message; returns the callback query id.

        With ``check`` the button must be on the message as currently shown, as in a real client."""
        if message.deleted:
            raise ValueError("the message was deleted; its buttons can no longer be pressed")
        if check and callback_data not in [button.get("callback_data") for button in message.buttons]:
            raise ValueError(f"no button with callback_data {callback_data!r}; buttons: {message.buttons}")
        query_id = str(next(self._query_ids))
        query = {
            "id": query_id,
            "from": user.to_json(),
            "message": copy.deepcopy(message.raw),
            "chat_instance": str(abs(message.chat_id) * 7919 + 13),
            "data": callback_data,
        }
        self._open_queries[query_id] = query
        self.inject_update("callback_query", query)
        return query_id

    def make_admin(self, user: TgUser, chat: TgChat) -> None:
        """``user`` becomes an administrator of the group (the first one made is its creator)."""
        admins = self._chat_admins.setdefault(chat.id, [])
        if user.id not in admins:
            admins.append(user.id)

    def invoices(self, chat: TgChat | TgUser | int) -> list[Invoice]:
        """The invoices the bot sent to the chat, oldest first."""
        chat_id = self._chat_id(chat)
        return [invoice for invoice in self.payments.invoices if invoice.chat_id == chat_id]

    async def pay(self, user: TgUser, invoice: Invoice) -> Checkout:
        """``user`` pays the invoice: a pre_checkout_query goes to the bot, and only if it answers ok within
        the window (``payments.window_s``) is the payment made, arriving as a successful_payment message."""
        query = self.payments.new_query(user.to_json(), invoice, time.monotonic())
        self.inject_update("pre_checkout_query", query)
        try:
            answer = await self.wait_for(lambda: self.payments.answers.get(query["id"]), self.payments.window_s)
        except TimeoutError:
            self.payments.open_queries.pop(query["id"], None)
            return Checkout("timeout", query["id"])
        if not answer.ok:
            return Checkout("declined", query["id"], error_message=answer.error_message)
        charge = self.payments.charge(user.id, invoice)
        chat = self._chats.chat_of(invoice.chat_id)
        message = self._chats.new_message(chat, user.to_json())
        message["successful_payment"] = payment_fields(charge)
        self._chats.keep(chat.id, message)
        return Checkout("paid", query["id"], charge, update=self.inject_update("message", message))

    def redeliver(self, update: JSON) -> None:
        """Deliver an update again, with its own update_id, as Telegram does when it was not confirmed."""
        self._updates.push(copy.deepcopy(update))

    def inject_update(self, kind: str, payload: JSON) -> JSON:
        """Queue any update (``kind`` is its field name, e.g. "message"); returns the whole update."""
        update = {"update_id": next(self._update_ids), kind: payload}
        self._updates.push(update)
        return update

    def block(self, who: TgUser | TgChat | int, *, notify: bool = True) -> None:
        """The user blocks the bot (or the bot is removed from a group): sends there answer 403.

        With ``notify`` the bot gets the my_chat_member update Telegram sends."""
        chat = self._chats.chat_of(who)
        self._blocked.add(chat.id)
        if notify:
            self._member_update(chat, "member", "kicked")

    def unblock(self, who: TgUser | TgChat | int, *, notify: bool = True) -> None:
        chat = self._chats.chat_of(who)
        self._blocked.discard(chat.id)
        if notify:
            self._member_update(chat, "kicked", "member")

    # -- fault injection

    def fail_next(
        self,
        method: str,
        times: int = 1,
        *,
        error_code: int = 429,
        description: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        """The next ``times`` calls of ``method`` fail with this error before doing anything."""
        if method.lower() not in self._methods:
            raise ValueError(f"unknown Bot API method {method!r}")
        if error_code == 429 and retry_after is None:
            retry_after = 1
        if description is None:
            if error_code == 429:
                description = f"Too Many Requests: retry after {retry_after}"
            else:
                description = {400: "Bad Request", 403: "Forbidden", 409: "Conflict"}.get(
                    error_code, HTTPStatus(error_code).phrase
                )
        queue = self._faults.setdefault(method.lower(), deque())
        queue.extend(_Fault(error_code, description, retry_after) for _ in range(times))

    def rate_limit(self, method: str, times: int = 1, retry_after: int = 1) -> None:
        """The next ``times`` calls of ``method`` answer 429 with ``parameters.retry_after``."""
        self.fail_next(method, times, error_code=429, retry_after=retry_after)

    def flood_limit(self, per_chat: int | None, window: float = 1.0) -> None:
        """Answer 429 to sends and edits beyond ``per_chat`` per ``window`` s in one chat (None: off)."""
        self._flood = None if per_chat is None else (per_chat, window)
        self._chat_sends.clear()

    # -- what the bot did

    def messages(self, chat: TgChat | TgUser | int) -> list[BotMessage]:
        """Every message the bot sent to the chat, oldest first (deleted ones included, marked)."""
        return list(self._chats.sent(self._chat_id(chat)))

    def all_messages(self) -> list[BotMessage]:
        return sorted(self._chats.all_sent(), key=lambda m: m.raw["date"])

    def chat_actions(self, chat: TgChat | TgUser | int) -> list[str]:
        return list(self._actions.get(self._chat_id(chat), []))

    def call_count(self, method: str) -> int:
        return sum(1 for call in self.calls if call.method.lower() == method.lower())

    def file(self, file_id: str) -> StoredFile:
        return self._files.by_id[file_id]

    def commands(self, scope: JSON | None = None, language_code: str = "") -> list[JSON]:
        return list(self._commands.get(self._commands_key(scope, language_code), []))

    @property
    def pending_updates(self) -> list[JSON]:
        """Updates not yet confirmed by the bot (getUpdates offset) or delivered to its webhook."""
        return list(self._updates.pending)

    @property
    def waiting_polls(self) -> int:
        """How many getUpdates requests are waiting right now."""
        return self._updates.waiting_polls

    @property
    def webhook_deliveries(self) -> list[WebhookDelivery]:
        """Every attempt so far to push an update to the webhook, in order."""
        return self._updates.deliveries

    @property
    def webhook_retry_delay(self) -> float:
        """The first pause after a failed webhook delivery; it doubles per failure, up to 5 s."""
        return self._updates.webhook_retry_delay

    @webhook_retry_delay.setter
    def webhook_retry_delay(self, seconds: float) -> None:
        self._updates.webhook_retry_delay = seconds

    @property
    def webhook_url(self) -> str | None:
        hook = self._updates.webhook
        return None if hook is None else hook.url

    # A timeout argument reads better in tests than wrapping every wait in asyncio.timeout.
    async def wait_for(self, predicate: Callable[[], T | None], timeout: float = 5.0) -> T:  # noqa: ASYNC109
        """Wait until ``predicate()`` is truthy, re-checked on every activity; return its value."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            waiter = self._activity.waiter()
            result = predicate()
            if result:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"condition not met within {timeout} s; {self.describe()}")
            await wait_until(waiter, remaining)

    async def next_message(self, chat: TgChat | TgUser | int, timeout: float = 5.0) -> BotMessage:  # noqa: ASYNC109
        """The bot's next message in the chat that this helper has not returned yet."""
        chat_id = self._chat_id(chat)
        seen = self._cursor.get(chat_id, 0)
        sent = self._chats.sent(chat_id)
        await self.wait_for(lambda: len(sent) > seen, timeout)
        self._cursor[chat_id] = seen + 1
        return sent[seen]

    async def wait_for_callback_answer(self, query_id: str, timeout: float = 5.0) -> CallbackAnswer:  # noqa: ASYNC109
        return await self.wait_for(lambda: self.callback_answers.get(query_id), timeout)

    def describe(self) -> str:
        """The latest calls, to explain a timeout."""
        recent = [call for call in self.calls if call.method != "getUpdates"][-12:]
        lines = [f"{call.method} -> {call.status} {call.description or ''}".rstrip() for call in recent]
        return "recent calls: " + ("; ".join(lines) if lines else "none")

    async def deliver_via_webhook(self, update: JSON, *, secret_token: str | _Unset | None = _UNSET) -> int | None:
        """POST one update to the webhook now, outside the queue; the HTTP status, or None if unreachable.

        ``secret_token`` overrides the header's value (None leaves the header out)."""
        hook = self._updates.webhook
        if hook is None:
            raise RuntimeError("no webhook is set")
        secret = hook.secret_token if isinstance(secret_token, _Unset) else secret_token
        status, _ = await self._updates.post(hook.url, update, secret)
        return status

    # -- HTTP

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        if request.method in ("GET", "HEAD") and (match := _FILE_ROUTE.fullmatch(request.path)):
            return self._serve_file(match[1], match[2])
        match = _API_ROUTE.fullmatch(request.path)
        if match is None:
            return error_response(ApiError(404, "Not Found"))
        if match[1] != self.token:
            return error_response(ApiError(401, "Unauthorized"))
        entry = self._methods.get(match[2].lower())
        if entry is None:
            return error_response(ApiError(404, "Not Found"))
        name, handler = entry
        call = ApiCall(name, {})
        self.calls.append(call)
        try:
            params = await read_params(request)
            call.params = params.summary()
            self._take_fault(name)
            result = await handler(params)
        except ApiError as error:
            call.status, call.description = error.code, error.description
            if error.code == 429:
                self.flood_counts[name] += 1
            return error_response(error)
        finally:
            self._activity.notify()
        body: JSON = {"ok": True}
        if isinstance(result, Reply):
            body.update(result=result.result, description=result.description)
        else:
            body["result"] = result
        return web.json_response(body)

    def _serve_file(self, token: str, path: str) -> web.StreamResponse:
        stored = self._files.by_path.get(path)
        if token != self.token or stored is None:
            return error_response(ApiError(404, "Not Found"))
        self.downloads.append(path)
        self._activity.notify()
        return web.Response(body=stored.data, content_type="application/octet-stream")

    def _take_fault(self, name: str) -> None:
        queue = self._faults.get(name.lower())
        if queue:
            fault = queue.popleft()
            raise ApiError(fault.code, fault.description, fault.retry_after)

    # -- updates: long polling and webhook

    async def _get_updates(self, p: Params) -> list[JSON]:
        if self._updates.webhook is not None:
            raise ApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )
        offset = p.integer("offset", 0) or 0
        limit = min(max(p.integer("limit", 100) or 100, 1), 100)
        timeout = max(p.number("timeout", 0.0), 0.0)
        self._updates.set_allowed(p.obj("allowed_updates"))
        return await self._updates.poll(offset, limit, timeout)

    async def _set_webhook(self, p: Params) -> Reply:
        url = p.text("url") or ""
        if not url:
            return await self._delete_webhook(p)
        scheme = urlsplit(url).scheme
        if scheme != "https" and not (scheme == "http" and is_loopback(url)):
            raise bad("bad webhook: An HTTPS URL must be provided for webhook")
        secret = p.text("secret_token")
        if secret is not None and not _SECRET_RE.fullmatch(secret):
            raise bad("bad webhook: secret token contains unallowed characters")
        allowed = p.obj("allowed_updates")
        self._updates.set_allowed(allowed)
        if p.flag("drop_pending_updates"):
            self._updates.pending.clear()
        hook = Webhook(url, secret, p.integer("max_connections", 40) or 40, allowed, p.text("ip_address"))
        self._updates.set_webhook(hook)
        return Reply(True, "Webhook was set")

    async def _delete_webhook(self, p: Params) -> Reply:
        if p.flag("drop_pending_updates"):
            self._updates.pending.clear()
        was_set = self._updates.delete_webhook()
        return Reply(True, "Webhook was deleted" if was_set else "Webhook is already deleted")

    async def _get_webhook_info(self, p: Params) -> JSON:
        return self._updates.webhook_info()

    # -- sending

    async def _get_me(self, p: Params) -> JSON:
        return {
            **self.bot.to_json(),
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    async def _log_out(self, p: Params) -> bool:
        return True

    async def _send_message(self, p: Params) -> JSON:
        chat = self._target(p)
        raw = p.text("text") or ""
        text, entities = format_text(raw, p.text("parse_mode"), p.obj("entities"))
        if not text.strip():
            raise bad("message text is empty")
        if u16(text) > TEXT_LIMIT:
            raise bad("message is too long")
        markup, inline = self._markup(p)
        content: JSON = {"text": text}
        if entities:
            content["entities"] = entities
        return self._bot_message(chat, p, "sendMessage", content, markup, inline).raw

    async def _send_photo(self, p: Params) -> JSON:
        chat = self._target(p)
        caption = self._caption(p.text("caption"), p.text("parse_mode"), p.obj("caption_entities"))
        data, _, _, upload = self._media(p.raw("photo"), p)
        sizes = self._photo_input(data, upload)
        markup, inline = self._markup(p)
        content: JSON = {"photo": sizes, **caption}
        if p.flag("has_spoiler"):
            content["has_media_spoiler"] = True
        return self._bot_message(chat, p, "sendPhoto", content, markup, inline, photo=data).raw

    async def _send_document(self, p: Params) -> JSON:
        chat = self._target(p)
        caption = self._caption(p.text("caption"), p.text("parse_mode"), p.obj("caption_entities"))
        data, filename, content_type, upload = self._media(p.raw("document"), p)
        if upload and len(data) > UPLOAD_LIMIT:
            raise ApiError(413, "Request Entity Too Large")
        name, mime = document_names(filename, content_type)
        markup, inline = self._markup(p)
        content: JSON = {"document": self._files.document(data, name, mime, None), **caption}
        record = self._bot_message(
            chat, p, "sendDocument", content, markup, inline, document=data, filename=name, mime_type=mime
        )
        return record.raw

    async def _send_media_group(self, p: Params) -> list[JSON]:
        chat = self._target(p)
        media = p.obj("media")
        if not isinstance(media, list) or not 2 <= len(media) <= 10:
            raise bad("media group must contain 2 to 10 items")
        kinds = {item.get("type") if isinstance(item, dict) else None for item in media}
        if not kinds <= {"photo", "document"}:
            raise bad(f"unsupported media type in the group: {sorted(map(str, kinds))}")
        if len(kinds) > 1:
            raise bad("documents can't be mixed with other media types")
        # Check every item before sending any, so a bad group sends nothing.
        prepared: list[tuple[JSON, JSON, bytes, str | None, str | None]] = []
        for item in media:
            caption = self._caption(item.get("caption"), item.get("parse_mode"), item.get("caption_entities"))
            data, filename, content_type, upload = self._media(item.get("media"), p)
            if item["type"] == "photo":
                prepared.append((item, caption, data, None, None))
            else:
                if upload and len(data) > UPLOAD_LIMIT:
                    raise ApiError(413, "Request Entity Too Large")
                prepared.append((item, caption, data, *document_names(filename, content_type)))
            if item["type"] == "photo" and upload:
                check_photo(data)
        group_id = str(next(self._update_ids) * 7919)
        sent: list[JSON] = []
        for item, caption, data, name, mime in prepared:
            content: JSON = {"media_group_id": group_id, **caption}
            if item["type"] == "photo":
                size = image_size(data) or (0, 0)
                content["photo"] = self._files.photo_sizes(data, size, None)
                record = self._bot_message(chat, p, "sendMediaGroup", content, None, None, photo=data)
            else:
                assert name is not None and mime is not None
                content["document"] = self._files.document(data, name, mime, None)
                record = self._bot_message(
                    chat,
                    p,
                    "sendMediaGroup",
                    content,
                    None,
                    None,
                    document=data,
                    filename=name,
                    mime_type=mime,
                )
            sent.append(record.raw)
        return sent

    async def _send_chat_action(self, p: Params) -> bool:
        chat = self._target(p, counts=False)
        action = p.text("action")
        if action not in _CHAT_ACTIONS:
            raise bad("wrong parameter action in request")
        self._actions.setdefault(chat.id, []).append(action)
        return True

    # -- editing and deleting

    async def _edit_message_text(self, p: Params) -> JSON:
        _, record = self._own_message(p, "edit")
        if "text" not in record.raw:
            raise bad("there is no text in the message to edit")
        text, entities = format_text(p.text("text") or "", p.text("parse_mode"), p.obj("entities"))
        if not text.strip():
            raise bad("message text is empty")
        if u16(text) > TEXT_LIMIT:
            raise bad("message is too long")
        markup, inline = self._markup(p)
        # Leaving reply_markup out of an edit removes the inline keyboard, as on Telegram.
        return self._apply_edit(record, {"text": text, "entities": entities, "reply_markup": inline}, markup)

    async def _edit_message_caption(self, p: Params) -> JSON:
        _, record = self._own_message(p, "edit")
        if "photo" not in record.raw and "document" not in record.raw:
            raise bad("there is no caption in the message to edit")
        caption = self._caption(p.text("caption"), p.text("parse_mode"), p.obj("caption_entities"))
        markup, inline = self._markup(p)
        changes = {"caption": caption.get("caption"), "caption_entities": caption.get("caption_entities")}
        return self._apply_edit(record, {**changes, "reply_markup": inline}, markup)

    async def _edit_message_reply_markup(self, p: Params) -> JSON:
        _, record = self._own_message(p, "edit")
        markup, inline = self._markup(p)
        return self._apply_edit(record, {"reply_markup": inline}, markup)

    async def _delete_message(self, p: Params) -> bool:
        chat = self._target(p, counts=False, blocked_ok=True)
        message_id = p.integer("message_id", required=True)
        assert message_id is not None
        if not self._chats.delete(chat.id, message_id):
            raise bad("message to delete not found")
        self.deleted.append((chat.id, message_id))
        return True

    # -- callbacks, files, commands

    async def _answer_callback_query(self, p: Params) -> bool:
        query_id = p.text("callback_query_id") or ""
        if self._open_queries.pop(query_id, None) is None:
            raise bad("query is too old and response timeout expired or query ID is invalid")
        text = p.text("text")
        if text is not None and u16(text) > CALLBACK_ANSWER_LIMIT:
            raise bad("MESSAGE_TOO_LONG")
        self.callback_answers[query_id] = CallbackAnswer(
            query_id, text, p.flag("show_alert"), p.text("url"), p.integer("cache_time", 0) or 0
        )
        return True

    async def _get_file(self, p: Params) -> JSON:
        stored = self._files.by_id.get(p.text("file_id") or "")
        if stored is None:
            raise bad("invalid file_id")
        if stored.declared_size > DOWNLOAD_LIMIT:
            raise bad("file is too big")
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": stored.declared_size,
            "file_path": stored.file_path,
        }

    async def _get_chat_member(self, p: Params) -> JSON:
        chat = self._target(p, counts=False)
        user_id = p.integer("user_id", required=True)
        if chat.type == "private":
            if chat.id != user_id:
                raise bad("user not found")
            return {"status": "member", "user": chat.user.to_json() if chat.user else {"id": user_id}}
        user: JSON = {"id": user_id, "is_bot": False, "first_name": "Member"}
        admins = self._chat_admins.get(chat.id, [])
        if admins and user_id == admins[0]:
            return {"status": "creator", "user": user, "is_anonymous": False}
        if user_id in admins:
            rights = (
                "can_manage_chat", "can_delete_messages", "can_manage_video_chats", "can_restrict_members",
                "can_change_info", "can_invite_users", "can_post_stories", "can_edit_stories", "can_delete_stories",
            )  # fmt: skip
            granted: JSON = dict.fromkeys(rights, True)
            return {"status": "administrator", "user": user, "can_be_edited": False, "is_anonymous": False,
                    "can_promote_members": False, **granted}  # fmt: skip
        return {"status": "member", "user": user}

    # -- payments

    async def _send_invoice(self, p: Params) -> JSON:
        chat = self._target(p)
        title, description, payload, currency, total = self.payments.check_invoice(p)
        markup, inline = self._markup(p)
        content: JSON = {
            "invoice": {
                "title": title,
                "description": description,
                "start_parameter": p.text("start_parameter") or "",
                "currency": currency,
                "total_amount": total,
            }
        }
        record = self._bot_message(chat, p, "sendInvoice", content, markup, inline)
        self.payments.invoices.append(Invoice(chat.id, record.message_id, title, description, payload, currency, total))
        return record.raw

    async def _answer_pre_checkout_query(self, p: Params) -> bool:
        return self.payments.answer(p, time.monotonic())

    async def _refund_star_payment(self, p: Params) -> bool:
        charge = self.payments.refund(p)
        # Telegram tells the bot with a service message in the buyer's chat.
        chat = self._chats.chat_of(charge.user_id)  # the buyer's private chat: its id is theirs
        assert chat.user is not None
        message = self._chats.new_message(chat, chat.user.to_json())
        message["refunded_payment"] = payment_fields(charge)
        self._chats.keep(chat.id, message)
        self.inject_update("message", message)
        return True

    async def _set_my_commands(self, p: Params) -> bool:
        commands = p.obj("commands")
        if not isinstance(commands, list) or len(commands) > 100:
            raise bad("can't parse commands JSON array")
        for command in commands:
            if not isinstance(command, dict) or not _COMMAND_RE.fullmatch(str(command.get("command", ""))):
                raise bad("BOT_COMMAND_INVALID")
            if not 1 <= len(str(command.get("description", ""))) <= 256:
                raise bad("command description must be 1-256 characters long")
        self._commands[self._commands_key(p.obj("scope"), p.text("language_code") or "")] = commands
        return True

    async def _get_my_commands(self, p: Params) -> list[JSON]:
        return self.commands(p.obj("scope"), p.text("language_code") or "")

    async def _delete_my_commands(self, p: Params) -> bool:
        self._commands.pop(self._commands_key(p.obj("scope"), p.text("language_code") or ""), None)
        return True

    # -- internals

    @staticmethod
    def _commands_key(scope: JSON | None, language_code: str) -> tuple[str, str]:
        return json.dumps(scope or {"type": "default"}, sort_keys=True), language_code

    def _chat_id(self, who: TgChat | TgUser | int) -> int:
        return who if isinstance(who, int) else who.id

    def _target(self, p: Params, *, counts: bool = True, blocked_ok: bool = False) -> TgChat:
        chat = self._chats.resolve(p.raw("chat_id"))
        if chat.id in self._blocked and not blocked_ok:
            if chat.type == "private":
                raise ApiError(403, "Forbidden: bot was blocked by the user")
            raise ApiError(403, "Forbidden: bot was kicked from the group chat")
        if counts and self._flood is not None:
            limit, window = self._flood
            now = time.monotonic()
            sends = self._chat_sends.setdefault(chat.id, deque())
            while sends and now - sends[0] >= window:
                sends.popleft()
            if len(sends) >= limit:
                wait = max(1, math.ceil(window - (now - sends[0])))
                raise ApiError(429, f"Too Many Requests: retry after {wait}", wait)
            sends.append(now)
        return chat

    def _own_message(self, p: Params, action: str) -> tuple[TgChat, BotMessage]:
        if p.raw("inline_message_id") is not None:
            raise bad("MESSAGE_ID_INVALID")
        chat = self._target(p)
        message_id = p.integer("message_id", required=True)
        assert message_id is not None
        if not self._chats.holds(chat.id, message_id):
            raise bad(f"message to {action} not found")
        record = self._chats.record_of(chat.id, message_id)
        if record is None:
            raise bad("message can't be edited")
        return chat, record

    def _apply_edit(self, record: BotMessage, changes: JSON, markup: JSON | None) -> JSON:
        current = record.raw
        edited = dict(current)
        for key, value in changes.items():
            if value in (None, "", []):
                edited.pop(key, None)
            else:
                edited[key] = value
        content_keys = ("text", "entities", "caption", "caption_entities")
        if all(edited.get(key) == current.get(key) for key in (*content_keys, "reply_markup")):
            raise ApiError(400, _NOT_MODIFIED)
        if any(edited.get(key) != current.get(key) for key in content_keys):
            edited["edit_date"] = int(time.time())
        record.history.append(current)
        record.raw = edited
        record.reply_markup = markup
        self._chats.keep(record.chat_id, edited)
        return edited

    def _markup(self, p: Params) -> tuple[JSON | None, JSON | None]:
        """The markup as sent, and the inline keyboard Telegram shows back in the Message (if any)."""
        markup = p.obj("reply_markup")
        if markup is None:
            return None, None
        if not isinstance(markup, dict):
            raise bad("can't parse reply keyboard markup JSON object")
        rows = markup.get("inline_keyboard")
        if rows is None:
            return markup, None
        if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
            raise bad("can't parse inline keyboard button: InlineKeyboardButton must be an Object")
        for button in (button for row in rows for button in row):
            if not isinstance(button, dict) or not button.get("text"):
                raise bad("BUTTON_TEXT_INVALID")
            if not _BUTTON_ACTIONS & button.keys():
                raise bad("text buttons are unallowed in the inline keyboard")
            data = button.get("callback_data")
            if "callback_data" in button and (
                not isinstance(data, str) or not 1 <= len(data.encode()) <= CALLBACK_DATA_LIMIT
            ):
                raise bad("BUTTON_DATA_INVALID")
        return markup, {"inline_keyboard": rows} if rows else None

    def _caption(self, raw: Any, parse_mode: Any, entities: Any) -> JSON:
        if not raw:
            return {}
        caption, caption_entities = format_text(str(raw), parse_mode or None, entities)
        if u16(caption) > CAPTION_LIMIT:
            raise bad("message caption is too long")
        fields: JSON = {"caption": caption}
        if caption_entities:
            fields["caption_entities"] = caption_entities
        return fields

    def _caption_fields(self, caption: str | None) -> JSON:
        if not caption:
            return {}
        fields: JSON = {"caption": caption}
        if entities := auto_entities(caption):
            fields["caption_entities"] = entities
        return fields

    def _media(self, value: Any, p: Params) -> tuple[bytes, str | None, str | None, bool]:
        """Bytes, file name, content type, and whether they were uploaded (not sent again by file_id)."""
        if isinstance(value, str) and value.startswith("attach://"):
            value = p.raw(value.removeprefix("attach://"))
        if isinstance(value, UploadedFile):
            return value.data, value.filename, value.content_type, True
        if isinstance(value, str) and value in self._files.by_id:
            stored = self._files.by_id[value]
            return stored.data, stored.file_path.rsplit("/", 1)[-1], None, False
        raise bad("wrong file identifier/HTTP URL specified")

    def _photo_input(self, data: bytes, upload: bool) -> list[JSON]:
        size = check_photo(data) if upload else image_size(data) or (0, 0)
        return self._files.photo_sizes(data, size, None)

    def _content(self, text: str | None, photo: bytes | None, caption: str | None) -> JSON:
        """A message's text, or its photo (as the sizes Telegram makes) and caption."""
        if (text is None) == (photo is None):
            raise ValueError("give text or a photo")
        if text is not None:
            content: JSON = {"text": text}
            if entities := auto_entities(text):
                content["entities"] = entities
            return content
        assert photo is not None
        size = image_size(photo)
        if size is None:
            raise ValueError("photo is not an image Pillow can read")
        return {"photo": self._files.photo_sizes(photo, size, None), **self._caption_fields(caption)}

    def _user_message(self, user: TgUser, chat: TgChat, content: JSON, reply_to: BotMessage | int | None) -> JSON:
        chat = self._chats.chat_of(chat)
        message = self._chats.new_message(chat, user.to_json())
        if reply_to is not None:
            reply_id = reply_to if isinstance(reply_to, int) else reply_to.message_id
            snapshot = self._chats.reply_snapshot(chat.id, reply_id)
            if snapshot is None:
                raise ValueError(f"no message {reply_id} in chat {chat.id} to reply to")
            message["reply_to_message"] = snapshot
        message.update(content)
        self._chats.keep(chat.id, message)
        self.inject_update("message", message)
        return message

    def _bot_message(
        self,
        chat: TgChat,
        p: Params,
        method: str,
        content: JSON,
        markup: JSON | None,
        inline: JSON | None,
        **files: Any,
    ) -> BotMessage:
        reply = p.obj("reply_parameters") or {}
        reply_id = reply.get("message_id") if isinstance(reply, dict) else None
        reply_id = reply_id or p.integer("reply_to_message_id")
        snapshot = None
        if reply_id:
            snapshot = self._chats.reply_snapshot(chat.id, int(reply_id))
            allowed = (isinstance(reply, dict) and reply.get("allow_sending_without_reply")) or p.flag(
                "allow_sending_without_reply"
            )
            if snapshot is None and not allowed:
                raise bad("message to be replied not found")
        message = self._chats.new_message(chat, self.bot.to_json())
        if (thread := p.integer("message_thread_id")) is not None:
            message["message_thread_id"] = thread
        if snapshot is not None:
            message["reply_to_message"] = snapshot
        message.update(content)
        if inline is not None:
            message["reply_markup"] = inline
        record = BotMessage(chat.id, message["message_id"], method, message, reply_markup=markup, **files)
        self._chats.record(record)
        return record

    def _member_update(self, chat: TgChat, old: str, new: str) -> None:
        if chat.type != "private" or chat.user is None:
            return
        bot = self.bot.to_json()
        new_member: JSON = {"user": bot, "status": new}
        if new == "kicked":
            new_member["until_date"] = 0
        old_member: JSON = {"user": bot, "status": old}
        if old == "kicked":
            old_member["until_date"] = 0
        payload = {
            "chat": chat.to_json(),
            "from": chat.user.to_json(),
            "date": int(time.time()),
            "old_chat_member": old_member,
            "new_chat_member": new_member,
        }
        self.inject_update("my_chat_member", payload)
