"""A fake Telegram Bot API on 127.0.0.1, faithful enough to drive the real python-telegram-bot."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import html
import io
import itertools
import json
import math
import mimetypes
import re
import secrets
import time
import warnings
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from PIL import Image

JSON = dict[str, Any]
T = TypeVar("T")

# Limits of the public Bot API (the same numbers as PTB's constants).
TEXT_LIMIT = 4096
CAPTION_LIMIT = 1024
CALLBACK_DATA_LIMIT = 64
CALLBACK_ANSWER_LIMIT = 200
DOWNLOAD_LIMIT = 20_000_000
PHOTO_UPLOAD_LIMIT = 10_000_000
UPLOAD_LIMIT = 50_000_000
PHOTO_SIDES_LIMIT = 10_000
PHOTO_RATIO_LIMIT = 20
# Bodies up to this size reach the handlers, so oversized uploads get Telegram's answer, not aiohttp's.
_MAX_BODY = 64 * 1024 * 1024
# Telegram leaves these update types out unless a bot asks for them in allowed_updates.
_OPT_IN_UPDATES = frozenset({"chat_member", "message_reaction", "message_reaction_count"})
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


# --- values a test sees -------------------------------------------------------------------------


@dataclass(frozen=True)
class TgUser:
    """A simulated Telegram user."""

    id: int
    first_name: str
    last_name: str | None = None
    username: str | None = None
    language_code: str | None = "en"
    is_bot: bool = False

    def to_json(self) -> JSON:
        data: JSON = {"id": self.id, "is_bot": self.is_bot, "first_name": self.first_name}
        for key in ("last_name", "username", "language_code"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        return data


@dataclass(frozen=True)
class TgChat:
    """A simulated chat; a private chat has the id of its user, as on Telegram."""

    id: int
    type: str
    title: str | None = None
    username: str | None = None
    user: TgUser | None = None

    def to_json(self) -> JSON:
        data: JSON = {"id": self.id, "type": self.type}
        if self.type == "private" and self.user is not None:
            data["first_name"] = self.user.first_name
            if self.user.last_name:
                data["last_name"] = self.user.last_name
            if self.user.username:
                data["username"] = self.user.username
        else:
            data["title"] = self.title or ""
            if self.username:
                data["username"] = self.username
        return data


@dataclass
class StoredFile:
    """A file the fake serves through getFile and the download route."""

    file_id: str
    file_unique_id: str
    file_path: str
    data: bytes
    declared_size: int


@dataclass
class BotMessage:
    """One message the bot sent, kept up to date with its edits and deletion."""

    chat_id: int
    message_id: int
    method: str
    raw: JSON
    photo: bytes | None = None
    document: bytes | None = None
    filename: str | None = None
    mime_type: str | None = None
    reply_markup: JSON | None = None
    history: list[JSON] = field(default_factory=list)
    deleted: bool = False

    @property
    def text(self) -> str | None:
        return self.raw.get("text")

    @property
    def caption(self) -> str | None:
        return self.raw.get("caption")

    @property
    def media_group_id(self) -> str | None:
        return self.raw.get("media_group_id")

    @property
    def reply_to_message_id(self) -> int | None:
        reply = self.raw.get("reply_to_message")
        return None if reply is None else int(reply["message_id"])

    @property
    def edited(self) -> bool:
        return bool(self.history)

    @property
    def buttons(self) -> list[JSON]:
        """The inline keyboard's buttons, row by row, as currently shown."""
        markup = self.raw.get("reply_markup") or {}
        return [button for row in markup.get("inline_keyboard", []) for button in row]


@dataclass(frozen=True)
class CallbackAnswer:
    """The bot's answerCallbackQuery for one button press."""

    query_id: str
    text: str | None
    show_alert: bool
    url: str | None
    cache_time: int


@dataclass
class ApiCall:
    """One Bot API request as the fake received and answered it."""

    method: str
    params: JSON
    status: int = 200
    description: str | None = None
    at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class WebhookDelivery:
    """One attempt to push an update to the bot's webhook."""

    update_id: int
    status: int | None
    error: str | None


# --- protocol plumbing --------------------------------------------------------------------------


class _ApiError(Exception):
    def __init__(self, code: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.retry_after = retry_after


def _bad(description: str) -> _ApiError:
    return _ApiError(400, f"Bad Request: {description}")


@dataclass(frozen=True)
class _Upload:
    data: bytes
    filename: str | None
    content_type: str | None


@dataclass(frozen=True)
class _Reply:
    """A successful result that Telegram answers with a description too."""

    result: Any
    description: str


@dataclass
class _Fault:
    code: int
    description: str
    retry_after: int | None


@dataclass
class _Webhook:
    url: str
    secret_token: str | None
    max_connections: int
    allowed_updates: list[str] | None
    ip_address: str | None
    last_error_date: int | None = None
    last_error_message: str | None = None


class _Params:
    """Request parameters: form fields arrive as strings, with objects JSON-encoded, as PTB sends them."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values

    def raw(self, name: str) -> Any:
        return self.values.get(name)

    def text(self, name: str) -> str | None:
        value = self.values.get(name)
        if value is None:
            return None
        if isinstance(value, _Upload):
            raise _bad(f"{name} must be a string")
        return value if isinstance(value, str) else str(value)

    def integer(self, name: str, default: int | None = None, *, required: bool = False) -> int | None:
        value = self.values.get(name)
        if value is None or value == "":
            if required:
                raise _bad(f"{name} is empty")
            return default
        if isinstance(value, (bool, _Upload)):
            raise _bad(f"invalid {name} specified")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise _bad(f"invalid {name} specified") from None

    def number(self, name: str, default: float) -> float:
        value = self.values.get(name)
        if value is None or value == "":
            return default
        try:
            return float(value)
        except (TypeError, ValueError):
            raise _bad(f"invalid {name} specified") from None

    def flag(self, name: str) -> bool:
        return self.values.get(name) in (True, 1, "true", "True", "1")

    def obj(self, name: str) -> Any:
        value = self.values.get(name)
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                raise _bad(f"can't parse {name} JSON object") from None
        return value

    def summary(self) -> JSON:
        """The parameters with uploads reduced to their size, for the call log."""
        return {
            key: f"<{len(value.data)} bytes>" if isinstance(value, _Upload) else value
            for key, value in self.values.items()
        }


async def _read_params(request: web.Request) -> _Params:
    values: dict[str, Any] = dict(request.query)
    if request.method == "POST" and request.can_read_body:
        if request.content_type == "application/json":
            try:
                body = await request.json()
            except ValueError:
                raise _bad("can't parse JSON request body") from None
            if not isinstance(body, dict):
                raise _bad("request body must be a JSON object")
            values.update(body)
        else:
            form = await request.post()
            for key, value in form.items():
                if isinstance(value, web.FileField):
                    values[key] = _Upload(value.file.read(), value.filename, value.content_type)
                else:
                    values[key] = value
    return _Params(values)


class _Signal:
    """Wakes every current waiter; notify() works from plain code, unlike asyncio.Condition."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    def waiter(self) -> asyncio.Event:
        """Take this before checking the condition, so a change in between is not missed."""
        return self._event


async def _wait(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), max(seconds, 0.0))


def _u16(text: str) -> int:
    """Telegram measures text and entity offsets in UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def _is_loopback(url: str) -> bool:
    return (urlsplit(url).hostname or "") in ("127.0.0.1", "localhost", "::1")


# --- formatted text (parse_mode) ----------------------------------------------------------------


class _Text:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.offset = 0
        self.entities: list[JSON] = []

    def add(self, piece: str) -> None:
        self.parts.append(piece)
        self.offset += _u16(piece)

    def entity(self, kind: str, start: int, **extra: Any) -> None:
        if self.offset > start:
            self.entities.append({"type": kind, "offset": start, "length": self.offset - start, **extra})

    def result(self) -> tuple[str, list[JSON]]:
        return "".join(self.parts), sorted(self.entities, key=lambda e: (e["offset"], -e["length"]))


def _entity_error(src: str, index: int, message: str) -> _ApiError:
    return _bad(f"can't parse entities: {message} at byte offset {len(src[:index].encode())}")


_HTML_TYPES = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "tg-spoiler": "spoiler",
    "span": "spoiler",
    "a": "text_link",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
    "tg-emoji": "custom_emoji",
}
_ATTR = r"([A-Za-z_:-]+)(?:\s*=\s*(?:\"([^\"]*)\"|'([^']*)'|([^\s\"'=<>`]+)))?"
_TAG_RE = re.compile(rf"<(/?)([A-Za-z][A-Za-z0-9-]*)((?:\s+{_ATTR})*)\s*/?>")
_ATTR_RE = re.compile(_ATTR)
_CHARREF_RE = re.compile(r"&(?:lt|gt|amp|quot|#[0-9]+|#x[0-9A-Fa-f]+);")


def _parse_html(src: str) -> tuple[str, list[JSON]]:
    out = _Text()
    stack: list[tuple[str, int, dict[str, str], int]] = []
    i = 0
    while i < len(src):
        char = src[i]
        if char == "<":
            match = _TAG_RE.match(src, i)
            if match is None:
                raise _entity_error(src, i, "Unsupported start tag")
            name = match[2].lower()
            if name not in _HTML_TYPES:
                raise _entity_error(src, i, f'Unsupported start tag "{name}"')
            if match[1]:
                if not stack or stack[-1][0] != name:
                    expected = f', expected "</{stack[-1][0]}>"' if stack else ""
                    raise _entity_error(src, i, f'Unmatched end tag "{name}"{expected}')
                _, start, attrs, _ = stack.pop()
                _close_html(out, name, start, attrs, stack)
            else:
                attrs = {
                    key.lower(): html.unescape(dq or sq or bare) for key, dq, sq, bare in _ATTR_RE.findall(match[3])
                }
                if name == "span" and attrs.get("class") != "tg-spoiler":
                    raise _entity_error(src, i, 'Unsupported start tag "span"')
                stack.append((name, out.offset, attrs, i))
            i = match.end()
            continue
        if char == "&" and (ref := _CHARREF_RE.match(src, i)):
            out.add(html.unescape(ref[0]))
            i = ref.end()
            continue
        out.add(char)
        i += 1
    if stack:
        name, _, _, at = stack[-1]
        raise _entity_error(src, at, f'Can\'t find end tag corresponding to start tag "{name}"')
    return out.result()


def _close_html(
    out: _Text,
    name: str,
    start: int,
    attrs: dict[str, str],
    stack: list[tuple[str, int, dict[str, str], int]],
) -> None:
    extra: JSON = {}
    kind = _HTML_TYPES[name]
    if name == "code" and stack and stack[-1][0] == "pre":
        # <pre><code class="language-x"> is one pre entity carrying the language.
        language = attrs.get("class", "")
        if language.startswith("language-"):
            stack[-1][2]["language"] = language.removeprefix("language-")
        return
    if name == "a":
        if not attrs.get("href"):
            return
        extra["url"] = attrs["href"]
    elif name == "pre" and attrs.get("language"):
        extra["language"] = attrs["language"]
    elif name == "blockquote" and "expandable" in attrs:
        kind = "expandable_blockquote"
    elif name == "tg-emoji":
        extra["custom_emoji_id"] = attrs.get("emoji-id", "")
    out.entity(kind, start, **extra)


_MD2_TYPES = {
    "*": ("bold", "Bold"),
    "_": ("italic", "Italic"),
    "__": ("underline", "Underline"),
    "~": ("strikethrough", "Strikethrough"),
    "||": ("spoiler", "Spoiler"),
    "`": ("code", "Code"),
    "```": ("pre", "Pre"),
    "[": ("text_link", "TextUrl"),
}
_MD2_RESERVED = frozenset("_*[]()~`>#+-=|{}.!")
_MD2_URL_RE = re.compile(r"\(((?:[^)\\]|\\.)*)\)")


def _parse_markdown_v2(src: str) -> tuple[str, list[JSON]]:
    out = _Text()
    stack: list[tuple[str, int, int, JSON]] = []  # marker, entity start, source index, extra fields

    def reserved(at: int) -> _ApiError:
        return _entity_error(src, at, f"Character '{src[at]}' is reserved and must be escaped with the preceding '\\'")

    def close() -> int:
        marker, start, _, fields = stack.pop()
        out.entity(_MD2_TYPES[marker][0], start, **fields)
        return len(marker)

    i = 0
    while i < len(src):
        char = src[i]
        top = stack[-1][0] if stack else None
        if char == "\\":
            if i + 1 >= len(src):
                raise reserved(i)
            out.add(src[i + 1])
            i += 2
            continue
        if top in ("`", "```"):
            assert top is not None
            if src.startswith(top, i):
                i += close()
            elif char == "`":
                raise reserved(i)
            else:
                out.add(char)
                i += 1
            continue
        if src.startswith("```", i):
            end, eol = src.find("```", i + 3), src.find("\n", i + 3)
            fields: JSON = {}
            if eol != -1 and (end == -1 or eol < end):
                if language := src[i + 3 : eol].strip():
                    fields["language"] = language
                stack.append(("```", out.offset, i, fields))
                i = eol + 1
            else:
                stack.append(("```", out.offset, i, fields))
                i += 3
            continue
        if top not in (None, "[") and src.startswith(top, i):
            i += close()
            continue
        opening = next((m for m in ("||", "__", "*", "_", "~", "`", "[") if src.startswith(m, i)), None)
        if opening is not None:
            if any(entry[0] == opening for entry in stack):
                _, _, at, _ = next(entry for entry in stack if entry[0] == opening)
                raise _entity_error(src, at, f"Can't find end of {_MD2_TYPES[opening][1]} entity")
            stack.append((opening, out.offset, i, {}))
            i += len(opening)
            continue
        if char == "]" and top == "[":
            url = _MD2_URL_RE.match(src, i + 1)
            if url is None:
                raise _entity_error(src, i + 1, "Can't find end of a URL")
            _, start, _, _ = stack.pop()
            out.entity("text_link", start, url=re.sub(r"\\(.)", r"\1", url[1]))
            i = url.end()
            continue
        if char == ">" and (i == 0 or src[i - 1] == "\n"):
            i += 1  # a blockquote line marker
            continue
        if char in _MD2_RESERVED:
            raise reserved(i)
        out.add(char)
        i += 1
    if stack:
        marker, _, at, _ = stack[-1]
        raise _entity_error(src, at, f"Can't find end of {_MD2_TYPES[marker][1]} entity")
    return out.result()


_MD_LINK_RE = re.compile(r"\[([^\]]*)\]\(([^)]*)\)")


def _parse_markdown(src: str) -> tuple[str, list[JSON]]:
    out = _Text()
    i = 0
    while i < len(src):
        char = src[i]
        if char == "\\" and i + 1 < len(src) and src[i + 1] in "_*`[":
            out.add(src[i + 1])
            i += 2
            continue
        marker = "```" if src.startswith("```", i) else char if char in "*_`" else None
        if marker is not None:
            end = src.find(marker, i + len(marker))
            if end == -1:
                raise _entity_error(src, i, "Can't find end of the entity starting")
            body, extra = src[i + len(marker) : end], {}
            first_line, _, rest = body.partition("\n")
            if marker == "```" and rest and first_line.strip():
                body = rest
                extra["language"] = first_line.strip()
            start = out.offset
            out.add(body)
            kind = {"*": "bold", "_": "italic", "`": "code", "```": "pre"}[marker]
            out.entity(kind, start, **extra)
            i = end + len(marker)
            continue
        if char == "[" and (link := _MD_LINK_RE.match(src, i)):
            start = out.offset
            out.add(link[1])
            out.entity("text_link", start, url=link[2])
            i = link.end()
            continue
        out.add(char)
        i += 1
    return out.result()


_AUTO_ENTITY_RE = re.compile(
    r"(?P<bot_command>(?<![\w/])/[A-Za-z0-9_]{1,32}(?:@[A-Za-z0-9_]{3,32})?(?![\w/]))"
    r"|(?P<mention>(?<!\w)@[A-Za-z0-9_]{5,32}(?!\w))"
    r"|(?P<url>https?://[^\s<>\"]+)"
)


def _auto_entities(text: str) -> list[JSON]:
    """The entities Telegram detects on its own in plain text (commands drive PTB's CommandHandler)."""
    return [
        {"type": match.lastgroup, "offset": _u16(text[: match.start()]), "length": _u16(match[0])}
        for match in _AUTO_ENTITY_RE.finditer(text)
    ]


def _format(text: str, parse_mode: str | None, entities: Any) -> tuple[str, list[JSON]]:
    if parse_mode:
        parser = {"html": _parse_html, "markdownv2": _parse_markdown_v2, "markdown": _parse_markdown}.get(
            parse_mode.lower()
        )
        if parser is None:
            raise _bad(f"unsupported parse_mode {parse_mode}")
        return parser(text)
    if entities:
        if not isinstance(entities, list):
            raise _bad("can't parse entities JSON object")
        return text, entities
    return text, _auto_entities(text)


# --- images -------------------------------------------------------------------------------------


def _image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from the header, or None when it is not an image Pillow knows.

    Raises Image.DecompressionBombError for absurd pixel counts."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as image:
                return image.size
        except (OSError, ValueError, SyntaxError):
            return None


def _decodes(data: bytes) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as image:
                image.load()
            return True
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            return False


def _jpeg_thumbnail(data: bytes, side: int) -> tuple[bytes, int, int] | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as image:
                image.thumbnail((side, side))
                small = image.convert("RGB")
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            return None
    buffer = io.BytesIO()
    small.save(buffer, "JPEG", quality=80)
    return buffer.getvalue(), small.width, small.height


# --- the server ---------------------------------------------------------------------------------


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
        self.webhook_retry_delay = webhook_retry_delay

        self.calls: list[ApiCall] = []
        self.flood_counts: Counter[str] = Counter()
        self.callback_answers: dict[str, CallbackAnswer] = {}
        self.deleted: list[tuple[int, int]] = []
        self.downloads: list[str] = []
        self.webhook_deliveries: list[WebhookDelivery] = []

        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._pump: asyncio.Task[None] | None = None
        self._port: int | None = None
        self._closing = False
        self._updates = _Signal()
        self._activity = _Signal()

        self._user_ids = itertools.count(100_001)
        self._group_ids = itertools.count(1)
        self._update_ids = itertools.count(500_000_001)
        self._query_ids = itertools.count(4_000_000_000_000_000_001)
        self._file_numbers = itertools.count(1)
        self._chats: dict[int, TgChat] = {}
        self._store: dict[int, dict[int, JSON]] = {}
        self._last_message_id: dict[int, int] = {}
        self._sent: dict[int, list[BotMessage]] = {}
        self._records: dict[tuple[int, int], BotMessage] = {}
        self._cursor: dict[int, int] = {}
        self._actions: dict[int, list[str]] = {}
        self._files: dict[str, StoredFile] = {}
        self._paths: dict[str, StoredFile] = {}
        self._pending: list[JSON] = []
        self._allowed: frozenset[str] | None = None
        self._poll_generation = 0
        self._waiting_polls = 0
        self._webhook: _Webhook | None = None
        self._faults: dict[str, deque[_Fault]] = {}
        self._blocked: set[int] = set()
        self._flood: tuple[int, float] | None = None
        self._chat_sends: dict[int, deque[float]] = {}
        self._open_queries: dict[str, JSON] = {}
        self._commands: dict[tuple[str, str], list[JSON]] = {}

        handlers: dict[str, Callable[[_Params], Awaitable[Any]]] = {
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
            "setMyCommands": self._set_my_commands,
            "getMyCommands": self._get_my_commands,
            "deleteMyCommands": self._delete_my_commands,
        }
        # Telegram matches method names case-insensitively.
        self._methods = {name.lower(): (name, handler) for name, handler in handlers.items()}

    # -- lifecycle

    async def start(self) -> None:
        app = web.Application(client_max_size=_MAX_BODY)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        # Cancelling handlers when the client goes away ends abandoned long polls at once.
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        self._pump = asyncio.create_task(self._webhook_pump())

    async def stop(self) -> None:
        self._closing = True
        self._updates.notify()
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        if self._session is not None:
            await self._session.close()
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
        return TgUser(next(self._user_ids), first_name, last_name, username, language_code)

    def private_chat(self, user: TgUser) -> TgChat:
        """The user's private chat with the bot (the same object on every call)."""
        chat = self._chats.get(user.id)
        if chat is None:
            chat = self._chats[user.id] = TgChat(user.id, "private", user=user)
        return chat

    def group(self, title: str = "Likeness testers", *, supergroup: bool = True, username: str | None = None) -> TgChat:
        number = next(self._group_ids)
        chat_id = -1_001_000_000_000 - number if supergroup else -4_000_000_000 - number
        chat = TgChat(chat_id, "supergroup" if supergroup else "group", title=title, username=username)
        self._chats[chat_id] = chat
        return chat

    # -- injecting what users do

    def send_text(self, user: TgUser, chat: TgChat, text: str, *, reply_to: BotMessage | int | None = None) -> JSON:
        """A user's text message; commands, mentions and links get entities as Telegram adds them."""
        content: JSON = {"text": text}
        if entities := _auto_entities(text):
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
        size = dimensions or _image_size(image_bytes)
        if size is None:
            raise ValueError("image_bytes is not an image Pillow can read; pass dimensions= to send it anyway")
        content: JSON = {"photo": self._photo_sizes(image_bytes, size, file_size)}
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
        content: JSON = {"document": self._document(data, filename, mime_type, file_size)}
        content.update(self._caption_fields(caption))
        return self._user_message(user, chat, content, None)

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

    def inject_update(self, kind: str, payload: JSON) -> JSON:
        """Queue any update (``kind`` is its field name, e.g. "message"); returns the whole update."""
        update = {"update_id": next(self._update_ids), kind: payload}
        self._pending.append(update)
        self._updates.notify()
        self._activity.notify()
        return update

    def block(self, who: TgUser | TgChat | int, *, notify: bool = True) -> None:
        """The user blocks the bot (or the bot is removed from a group): sends there answer 403.

        With ``notify`` the bot gets the my_chat_member update Telegram sends."""
        chat = self._chat_of(who)
        self._blocked.add(chat.id)
        if notify:
            self._member_update(chat, "member", "kicked")

    def unblock(self, who: TgUser | TgChat | int, *, notify: bool = True) -> None:
        chat = self._chat_of(who)
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
        return list(self._sent.get(self._chat_id(chat), []))

    def all_messages(self) -> list[BotMessage]:
        return sorted((m for ms in self._sent.values() for m in ms), key=lambda m: m.raw["date"])

    def chat_actions(self, chat: TgChat | TgUser | int) -> list[str]:
        return list(self._actions.get(self._chat_id(chat), []))

    def call_count(self, method: str) -> int:
        return sum(1 for call in self.calls if call.method.lower() == method.lower())

    def file(self, file_id: str) -> StoredFile:
        return self._files[file_id]

    def commands(self, scope: JSON | None = None, language_code: str = "") -> list[JSON]:
        return list(self._commands.get(self._commands_key(scope, language_code), []))

    @property
    def pending_updates(self) -> list[JSON]:
        """Updates not yet confirmed by the bot (getUpdates offset) or delivered to its webhook."""
        return list(self._pending)

    @property
    def waiting_polls(self) -> int:
        """How many getUpdates requests are waiting right now."""
        return self._waiting_polls

    @property
    def webhook_url(self) -> str | None:
        return None if self._webhook is None else self._webhook.url

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
            await _wait(waiter, remaining)

    async def next_message(self, chat: TgChat | TgUser | int, timeout: float = 5.0) -> BotMessage:  # noqa: ASYNC109
        """The bot's next message in the chat that this helper has not returned yet."""
        chat_id = self._chat_id(chat)
        seen = self._cursor.get(chat_id, 0)
        await self.wait_for(lambda: len(self._sent.get(chat_id, [])) > seen, timeout)
        self._cursor[chat_id] = seen + 1
        return self._sent[chat_id][seen]

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
        if self._webhook is None:
            raise RuntimeError("no webhook is set")
        secret = self._webhook.secret_token if isinstance(secret_token, _Unset) else secret_token
        status, _ = await self._post_update(self._webhook.url, update, secret)
        return status

    # -- HTTP

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        if request.method in ("GET", "HEAD") and (match := _FILE_ROUTE.fullmatch(request.path)):
            return self._serve_file(match[1], match[2])
        match = _API_ROUTE.fullmatch(request.path)
        if match is None:
            return _error_response(_ApiError(404, "Not Found"))
        if match[1] != self.token:
            return _error_response(_ApiError(401, "Unauthorized"))
        entry = self._methods.get(match[2].lower())
        if entry is None:
            return _error_response(_ApiError(404, "Not Found"))
        name, handler = entry
        call = ApiCall(name, {})
        self.calls.append(call)
        try:
            params = await _read_params(request)
            call.params = params.summary()
            self._take_fault(name)
            result = await handler(params)
        except _ApiError as error:
            call.status, call.description = error.code, error.description
            if error.code == 429:
                self.flood_counts[name] += 1
            return _error_response(error)
        finally:
            self._activity.notify()
        body: JSON = {"ok": True}
        if isinstance(result, _Reply):
            body.update(result=result.result, description=result.description)
        else:
            body["result"] = result
        return web.json_response(body)

    def _serve_file(self, token: str, path: str) -> web.StreamResponse:
        stored = self._paths.get(path)
        if token != self.token or stored is None:
            return _error_response(_ApiError(404, "Not Found"))
        self.downloads.append(path)
        self._activity.notify()
        return web.Response(body=stored.data, content_type="application/octet-stream")

    def _take_fault(self, name: str) -> None:
        queue = self._faults.get(name.lower())
        if queue:
            fault = queue.popleft()
            raise _ApiError(fault.code, fault.description, fault.retry_after)

    # -- updates: long polling and webhook

    def _is_allowed(self, update: JSON) -> bool:
        kind = next(key for key in update if key != "update_id")
        return kind in self._allowed if self._allowed else kind not in _OPT_IN_UPDATES

    def _deliverable(self, limit: int) -> list[JSON]:
        # Telegram never keeps updates of types the bot did not ask for.
        self._pending = [update for update in self._pending if self._is_allowed(update)]
        return self._pending[:limit]

    def _confirm(self, offset: int) -> None:
        if offset > 0:
            self._pending = [update for update in self._pending if update["update_id"] >= offset]
        elif offset < 0:
            self._pending = self._pending[offset:]

    def _set_allowed(self, allowed: Any) -> None:
        if allowed is not None:
            if not isinstance(allowed, list):
                raise _bad("can't parse allowed_updates JSON array")
            self._allowed = frozenset(allowed) or None

    async def _get_updates(self, p: _Params) -> list[JSON]:
        if self._webhook is not None:
            raise _ApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )
        offset = p.integer("offset", 0) or 0
        limit = min(max(p.integer("limit", 100) or 100, 1), 100)
        timeout = max(p.number("timeout", 0.0), 0.0)
        self._set_allowed(p.obj("allowed_updates"))
        self._confirm(offset)
        # A newer getUpdates ends the one still waiting, as on Telegram.
        self._poll_generation += 1
        self._updates.notify()
        generation = self._poll_generation
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._waiting_polls += 1
        self._activity.notify()
        try:
            while True:
                waiter = self._updates.waiter()
                if generation != self._poll_generation:
                    raise _ApiError(
                        409,
                        "Conflict: terminated by other getUpdates request; "
                        "make sure that only one bot instance is running",
                    )
                batch = self._deliverable(limit)
                remaining = deadline - loop.time()
                if batch or remaining <= 0 or self._closing or self._webhook is not None:
                    return batch
                await _wait(waiter, remaining)
        finally:
            self._waiting_polls -= 1

    async def _set_webhook(self, p: _Params) -> _Reply:
        url = p.text("url") or ""
        if not url:
            return await self._delete_webhook(p)
        scheme = urlsplit(url).scheme
        if scheme != "https" and not (scheme == "http" and _is_loopback(url)):
            raise _bad("bad webhook: An HTTPS URL must be provided for webhook")
        secret = p.text("secret_token")
        if secret is not None and not _SECRET_RE.fullmatch(secret):
            raise _bad("bad webhook: secret token contains unallowed characters")
        allowed = p.obj("allowed_updates")
        self._set_allowed(allowed)
        if p.flag("drop_pending_updates"):
            self._pending.clear()
        self._webhook = _Webhook(url, secret, p.integer("max_connections", 40) or 40, allowed, p.text("ip_address"))
        self._poll_generation += 1
        self._updates.notify()
        return _Reply(True, "Webhook was set")

    async def _delete_webhook(self, p: _Params) -> _Reply:
        if p.flag("drop_pending_updates"):
            self._pending.clear()
        was_set, self._webhook = self._webhook is not None, None
        self._updates.notify()
        return _Reply(True, "Webhook was deleted" if was_set else "Webhook is already deleted")

    async def _get_webhook_info(self, p: _Params) -> JSON:
        hook = self._webhook
        info: JSON = {"url": hook.url if hook else "", "has_custom_certificate": False}
        info["pending_update_count"] = len(self._pending)
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
            waiter = self._updates.waiter()
            hook = self._webhook
            batch = self._deliverable(1) if hook is not None else []
            if hook is None or not batch:
                await waiter.wait()
                continue
            update = batch[0]
            status, error = await self._post_update(hook.url, update, hook.secret_token)
            self.webhook_deliveries.append(WebhookDelivery(update["update_id"], status, error))
            if error is None:
                failures = 0
                self._pending = [queued for queued in self._pending if queued is not update]
            else:
                failures += 1
                hook.last_error_date = int(time.time())
                hook.last_error_message = error
            self._activity.notify()
            if error is not None:
                await asyncio.sleep(min(self.webhook_retry_delay * 2 ** (failures - 1), 5.0))

    async def _post_update(self, url: str, update: JSON, secret: str | None) -> tuple[int | None, str | None]:
        if not _is_loopback(url):
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

    # -- sending

    async def _get_me(self, p: _Params) -> JSON:
        return {
            **self.bot.to_json(),
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    async def _log_out(self, p: _Params) -> bool:
        return True

    async def _send_message(self, p: _Params) -> JSON:
        chat = self._target(p)
        raw = p.text("text") or ""
        text, entities = _format(raw, p.text("parse_mode"), p.obj("entities"))
        if not text.strip():
            raise _bad("message text is empty")
        if _u16(text) > TEXT_LIMIT:
            raise _bad("message is too long")
        markup, inline = self._markup(p)
        content: JSON = {"text": text}
        if entities:
            content["entities"] = entities
        return self._bot_message(chat, p, "sendMessage", content, markup, inline).raw

    async def _send_photo(self, p: _Params) -> JSON:
        chat = self._target(p)
        caption = self._caption(p.text("caption"), p.text("parse_mode"), p.obj("caption_entities"))
        data, _, _, upload = self._media(p.raw("photo"), p)
        sizes = self._photo_input(data, upload)
        markup, inline = self._markup(p)
        content: JSON = {"photo": sizes, **caption}
        if p.flag("has_spoiler"):
            content["has_media_spoiler"] = True
        return self._bot_message(chat, p, "sendPhoto", content, markup, inline, photo=data).raw

    async def _send_document(self, p: _Params) -> JSON:
        chat = self._target(p)
        caption = self._caption(p.text("caption"), p.text("parse_mode"), p.obj("caption_entities"))
        data, filename, content_type, upload = self._media(p.raw("document"), p)
        if upload and len(data) > UPLOAD_LIMIT:
            raise _ApiError(413, "Request Entity Too Large")
        name, mime = self._document_names(filename, content_type)
        markup, inline = self._markup(p)
        content: JSON = {"document": self._document(data, name, mime, None), **caption}
        record = self._bot_message(
            chat, p, "sendDocument", content, markup, inline, document=data, filename=name, mime_type=mime
        )
        return record.raw

    async def _send_media_group(self, p: _Params) -> list[JSON]:
        chat = self._target(p)
        media = p.obj("media")
        if not isinstance(media, list) or not 2 <= len(media) <= 10:
            raise _bad("media group must contain 2 to 10 items")
        kinds = {item.get("type") if isinstance(item, dict) else None for item in media}
        if not kinds <= {"photo", "document"}:
            raise _bad(f"unsupported media type in the group: {sorted(map(str, kinds))}")
        if len(kinds) > 1:
            raise _bad("documents can't be mixed with other media types")
        # Check every item before sending any, so a bad group sends nothing.
        prepared: list[tuple[JSON, JSON, bytes, str | None, str | None]] = []
        for item in media:
            caption = self._caption(item.get("caption"), item.get("parse_mode"), item.get("caption_entities"))
            data, filename, content_type, upload = self._media(item.get("media"), p)
            if item["type"] == "photo":
                prepared.append((item, caption, data, None, None))
            else:
                if upload and len(data) > UPLOAD_LIMIT:
                    raise _ApiError(413, "Request Entity Too Large")
                prepared.append((item, caption, data, *self._document_names(filename, content_type)))
            if item["type"] == "photo" and upload:
                self._check_photo(data)
        group_id = str(next(self._update_ids) * 7919)
        sent: list[JSON] = []
        for item, caption, data, name, mime in prepared:
            content: JSON = {"media_group_id": group_id, **caption}
            if item["type"] == "photo":
                size = _image_size(data) or (0, 0)
                content["photo"] = self._photo_sizes(data, size, None)
                record = self._bot_message(chat, p, "sendMediaGroup", content, None, None, photo=data)
            else:
                assert name is not None and mime is not None
                content["document"] = self._document(data, name, mime, None)
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

    async def _send_chat_action(self, p: _Params) -> bool:
        chat = self._target(p, counts=False)
        action = p.text("action")
        if action not in _CHAT_ACTIONS:
            raise _bad("wrong parameter action in request")
        self._actions.setdefault(chat.id, []).append(action)
        return True

    # -- editing and deleting

    async def _edit_message_text(self, p: _Params) -> JSON:
        _, record = self._own_message(p, "edit")
        if "text" not in record.raw:
            raise _bad("there is no text in the message to edit")
        text, entities = _format(p.text("text") or "", p.text("parse_mode"), p.obj("entities"))
        if not text.strip():
            raise _bad("message text is empty")
        if _u16(text) > TEXT_LIMIT:
            raise _bad("message is too long")
        markup, inline = self._markup(p)
        # Leaving reply_markup out of an edit removes the inline keyboard, as on Telegram.
        return self._apply_edit(record, {"text": text, "entities": entities, "reply_markup": inline}, markup)

    async def _edit_message_caption(self, p: _Params) -> JSON:
        _, record = self._own_message(p, "edit")
        if "photo" not in record.raw and "document" not in record.raw:
            raise _bad("there is no caption in the message to edit")
        caption = self._caption(p.text("caption"), p.text("parse_mode"), p.obj("caption_entities"))
        markup, inline = self._markup(p)
        changes = {"caption": caption.get("caption"), "caption_entities": caption.get("caption_entities")}
        return self._apply_edit(record, {**changes, "reply_markup": inline}, markup)

    async def _edit_message_reply_markup(self, p: _Params) -> JSON:
        _, record = self._own_message(p, "edit")
        markup, inline = self._markup(p)
        return self._apply_edit(record, {"reply_markup": inline}, markup)

    async def _delete_message(self, p: _Params) -> bool:
        chat = self._target(p, counts=False, blocked_ok=True)
        message_id = p.integer("message_id", required=True)
        assert message_id is not None
        if self._store.get(chat.id, {}).pop(message_id, None) is None:
            raise _bad("message to delete not found")
        if record := self._records.get((chat.id, message_id)):
            record.deleted = True
        self.deleted.append((chat.id, message_id))
        return True

    # -- callbacks, files, commands

    async def _answer_callback_query(self, p: _Params) -> bool:
        query_id = p.text("callback_query_id") or ""
        if self._open_queries.pop(query_id, None) is None:
            raise _bad("query is too old and response timeout expired or query ID is invalid")
        text = p.text("text")
        if text is not None and _u16(text) > CALLBACK_ANSWER_LIMIT:
            raise _bad("MESSAGE_TOO_LONG")
        self.callback_answers[query_id] = CallbackAnswer(
            query_id, text, p.flag("show_alert"), p.text("url"), p.integer("cache_time", 0) or 0
        )
        return True

    async def _get_file(self, p: _Params) -> JSON:
        stored = self._files.get(p.text("file_id") or "")
        if stored is None:
            raise _bad("invalid file_id")
        if stored.declared_size > DOWNLOAD_LIMIT:
            raise _bad("file is too big")
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": stored.declared_size,
            "file_path": stored.file_path,
        }

    async def _set_my_commands(self, p: _Params) -> bool:
        commands = p.obj("commands")
        if not isinstance(commands, list) or len(commands) > 100:
            raise _bad("can't parse commands JSON array")
        for command in commands:
            if not isinstance(command, dict) or not _COMMAND_RE.fullmatch(str(command.get("command", ""))):
                raise _bad("BOT_COMMAND_INVALID")
            if not 1 <= len(str(command.get("description", ""))) <= 256:
                raise _bad("command description must be 1-256 characters long")
        self._commands[self._commands_key(p.obj("scope"), p.text("language_code") or "")] = commands
        return True

    async def _get_my_commands(self, p: _Params) -> list[JSON]:
        return self.commands(p.obj("scope"), p.text("language_code") or "")

    async def _delete_my_commands(self, p: _Params) -> bool:
        self._commands.pop(self._commands_key(p.obj("scope"), p.text("language_code") or ""), None)
        return True

    # -- internals

    @staticmethod
    def _commands_key(scope: JSON | None, language_code: str) -> tuple[str, str]:
        return json.dumps(scope or {"type": "default"}, sort_keys=True), language_code

    def _chat_id(self, who: TgChat | TgUser | int) -> int:
        return who if isinstance(who, int) else who.id

    def _chat_of(self, who: TgUser | TgChat | int) -> TgChat:
        if isinstance(who, TgUser):
            return self.private_chat(who)
        if isinstance(who, TgChat):
            return self._chats.setdefault(who.id, who)
        return self._chats[who]

    def _resolve_chat(self, value: Any) -> TgChat:
        if value is None or value == "":
            raise _bad("chat_id is empty")
        if isinstance(value, str) and value.startswith("@"):
            found = next((c for c in self._chats.values() if c.username and f"@{c.username}" == value), None)
            if found is None:
                raise _bad("chat not found")
            return found
        try:
            chat = self._chats.get(int(value))
        except (TypeError, ValueError):
            chat = None
        if chat is None:
            raise _bad("chat not found")
        return chat

    def _target(self, p: _Params, *, counts: bool = True, blocked_ok: bool = False) -> TgChat:
        chat = self._resolve_chat(p.raw("chat_id"))
        if chat.id in self._blocked and not blocked_ok:
            if chat.type == "private":
                raise _ApiError(403, "Forbidden: bot was blocked by the user")
            raise _ApiError(403, "Forbidden: bot was kicked from the group chat")
        if counts and self._flood is not None:
            limit, window = self._flood
            now = time.monotonic()
            sends = self._chat_sends.setdefault(chat.id, deque())
            while sends and now - sends[0] >= window:
                sends.popleft()
            if len(sends) >= limit:
                wait = max(1, math.ceil(window - (now - sends[0])))
                raise _ApiError(429, f"Too Many Requests: retry after {wait}", wait)
            sends.append(now)
        return chat

    def _own_message(self, p: _Params, action: str) -> tuple[TgChat, BotMessage]:
        if p.raw("inline_message_id") is not None:
            raise _bad("MESSAGE_ID_INVALID")
        chat = self._target(p)
        message_id = p.integer("message_id", required=True)
        assert message_id is not None
        if message_id not in self._store.get(chat.id, {}):
            raise _bad(f"message to {action} not found")
        record = self._records.get((chat.id, message_id))
        if record is None:
            raise _bad("message can't be edited")
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
            raise _ApiError(400, _NOT_MODIFIED)
        if any(edited.get(key) != current.get(key) for key in content_keys):
            edited["edit_date"] = int(time.time())
        record.history.append(current)
        record.raw = edited
        record.reply_markup = markup
        self._store[record.chat_id][record.message_id] = edited
        return edited

    def _markup(self, p: _Params) -> tuple[JSON | None, JSON | None]:
        """The markup as sent, and the inline keyboard Telegram shows back in the Message (if any)."""
        markup = p.obj("reply_markup")
        if markup is None:
            return None, None
        if not isinstance(markup, dict):
            raise _bad("can't parse reply keyboard markup JSON object")
        rows = markup.get("inline_keyboard")
        if rows is None:
            return markup, None
        if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
            raise _bad("can't parse inline keyboard button: InlineKeyboardButton must be an Object")
        for button in (button for row in rows for button in row):
            if not isinstance(button, dict) or not button.get("text"):
                raise _bad("BUTTON_TEXT_INVALID")
            if not _BUTTON_ACTIONS & button.keys():
                raise _bad("text buttons are unallowed in the inline keyboard")
            data = button.get("callback_data")
            if "callback_data" in button and (
                not isinstance(data, str) or not 1 <= len(data.encode()) <= CALLBACK_DATA_LIMIT
            ):
                raise _bad("BUTTON_DATA_INVALID")
        return markup, {"inline_keyboard": rows} if rows else None

    def _caption(self, raw: Any, parse_mode: Any, entities: Any) -> JSON:
        if not raw:
            return {}
        caption, caption_entities = _format(str(raw), parse_mode or None, entities)
        if _u16(caption) > CAPTION_LIMIT:
            raise _bad("message caption is too long")
        fields: JSON = {"caption": caption}
        if caption_entities:
            fields["caption_entities"] = caption_entities
        return fields

    def _caption_fields(self, caption: str | None) -> JSON:
        if not caption:
            return {}
        fields: JSON = {"caption": caption}
        if entities := _auto_entities(caption):
            fields["caption_entities"] = entities
        return fields

    def _media(self, value: Any, p: _Params) -> tuple[bytes, str | None, str | None, bool]:
        """Bytes, file name, content type, and whether they were uploaded (not sent again by file_id)."""
        if isinstance(value, str) and value.startswith("attach://"):
            value = p.raw(value.removeprefix("attach://"))
        if isinstance(value, _Upload):
            return value.data, value.filename, value.content_type, True
        if isinstance(value, str) and value in self._files:
            stored = self._files[value]
            return stored.data, stored.file_path.rsplit("/", 1)[-1], None, False
        raise _bad("wrong file identifier/HTTP URL specified")

    def _check_photo(self, data: bytes) -> tuple[int, int]:
        if len(data) > PHOTO_UPLOAD_LIMIT:
            raise _bad("PHOTO_INVALID_DIMENSIONS")
        try:
            size = _image_size(data)
        except Image.DecompressionBombError:
            raise _bad("PHOTO_INVALID_DIMENSIONS") from None
        if size is None or not _decodes(data):
            raise _bad("IMAGE_PROCESS_FAILED")
        width, height = size
        if width + height > PHOTO_SIDES_LIMIT or max(width, height) > PHOTO_RATIO_LIMIT * max(min(width, height), 1):
            raise _bad("PHOTO_INVALID_DIMENSIONS")
        return size

    def _photo_input(self, data: bytes, upload: bool) -> list[JSON]:
        size = self._check_photo(data) if upload else _image_size(data) or (0, 0)
        return self._photo_sizes(data, size, None)

    def _photo_sizes(self, data: bytes, size: tuple[int, int], declared_size: int | None) -> list[JSON]:
        """Thumbnails for the sides Telegram makes that are smaller than the photo, then the photo itself."""
        width, height = size
        sizes: list[JSON] = []
        for side in (90, 320, 800):
            if max(width, height) <= side:
                break
            thumbnail = _jpeg_thumbnail(data, side)
            if thumbnail is None:
                break
            small, small_width, small_height = thumbnail
            sizes.append(self._photo_size(self._store_file(small, "photos", "jpg"), small_width, small_height))
        full = self._store_file(data, "photos", "jpg", declared_size)
        sizes.append(self._photo_size(full, width, height))
        return sizes

    @staticmethod
    def _photo_size(stored: StoredFile, width: int, height: int) -> JSON:
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": stored.declared_size,
            "width": width,
            "height": height,
        }

    def _document(self, data: bytes, filename: str, mime_type: str, declared_size: int | None) -> JSON:
        extension = filename.rsplit(".", 1)[-1] if "." in filename else "bin"
        stored = self._store_file(data, "documents", extension, declared_size)
        document: JSON = {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_name": filename,
            "mime_type": mime_type,
            "file_size": stored.declared_size,
        }
        if mime_type.startswith("image/"):
            with contextlib.suppress(Image.DecompressionBombError):
                size = _image_size(data)
                # Only modest images get a preview, so a hostile file cannot make the fake decode a bomb.
                if size is not None and size[0] * size[1] <= 25_000_000 and max(size) > 0:
                    thumbnail = _jpeg_thumbnail(data, 320)
                    if thumbnail is not None:
                        small, width, height = thumbnail
                        thumb_file = self._store_file(small, "thumbnails", "jpg")
                        document["thumbnail"] = self._photo_size(thumb_file, width, height)
        return document

    @staticmethod
    def _document_names(filename: str | None, content_type: str | None) -> tuple[str, str]:
        name = filename or "document"
        if content_type and content_type != "application/octet-stream":
            return name, content_type
        return name, mimetypes.guess_type(name)[0] or "application/octet-stream"

    def _store_file(self, data: bytes, folder: str, extension: str, declared_size: int | None = None) -> StoredFile:
        number = next(self._file_numbers)
        prefix = {"photos": "AgAC", "documents": "BQAC", "thumbnails": "AAMC"}[folder]
        stored = StoredFile(
            file_id=f"{prefix}{secrets.token_urlsafe(30)}",
            file_unique_id=f"AQAD{secrets.token_urlsafe(9)}",
            # Telegram-style relative paths; PTB only prefixes paths that do not exist on local disk.
            file_path=f"{folder}/file_{number}.{extension}",
            data=data,
            declared_size=len(data) if declared_size is None else declared_size,
        )
        self._files[stored.file_id] = stored
        self._paths[stored.file_path] = stored
        return stored

    def _new_message(self, chat: TgChat, sender: JSON) -> JSON:
        message_id = self._last_message_id.get(chat.id, 0) + 1
        self._last_message_id[chat.id] = message_id
        return {"message_id": message_id, "from": sender, "chat": chat.to_json(), "date": int(time.time())}

    def _reply_snapshot(self, chat_id: int, message_id: int) -> JSON | None:
        target = self._store.get(chat_id, {}).get(message_id)
        if target is None:
            return None
        return {key: value for key, value in target.items() if key != "reply_to_message"}

    def _user_message(self, user: TgUser, chat: TgChat, content: JSON, reply_to: BotMessage | int | None) -> JSON:
        chat = self._chat_of(chat)
        message = self._new_message(chat, user.to_json())
        if reply_to is not None:
            reply_id = reply_to if isinstance(reply_to, int) else reply_to.message_id
            snapshot = self._reply_snapshot(chat.id, reply_id)
            if snapshot is None:
                raise ValueError(f"no message {reply_id} in chat {chat.id} to reply to")
            message["reply_to_message"] = snapshot
        message.update(content)
        self._store.setdefault(chat.id, {})[message["message_id"]] = message
        self.inject_update("message", message)
        return message

    def _bot_message(
        self,
        chat: TgChat,
        p: _Params,
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
            snapshot = self._reply_snapshot(chat.id, int(reply_id))
            allowed = (isinstance(reply, dict) and reply.get("allow_sending_without_reply")) or p.flag(
                "allow_sending_without_reply"
            )
            if snapshot is None and not allowed:
                raise _bad("message to be replied not found")
        message = self._new_message(chat, self.bot.to_json())
        if (thread := p.integer("message_thread_id")) is not None:
            message["message_thread_id"] = thread
        if snapshot is not None:
            message["reply_to_message"] = snapshot
        message.update(content)
        if inline is not None:
            message["reply_markup"] = inline
        self._store.setdefault(chat.id, {})[message["message_id"]] = message
        record = BotMessage(chat.id, message["message_id"], method, message, reply_markup=markup, **files)
        self._sent.setdefault(chat.id, []).append(record)
        self._records[(chat.id, record.message_id)] = record
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


def _error_response(error: _ApiError) -> web.Response:
    body: JSON = {"ok": False, "error_code": error.code, "description": error.description}
    if error.retry_after is not None:
        body["parameters"] = {"retry_after": error.retry_after}
    return web.json_response(body, status=error.code)
