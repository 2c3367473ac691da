"""Formatted text as Telegram reads it: parse modes, entities, and offsets in UTF-16 code units."""

from __future__ import annotations

import html
import re
from typing import Any

from tests.fakes.telegram.models import JSON
from tests.fakes.telegram.protocol import ApiError, bad


def u16(text: str) -> int:
    """Telegram measures text and entity offsets in UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


class _Text:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.offset = 0
        self.entities: list[JSON] = []

    def add(self, piece: str) -> None:
        self.parts.append(piece)
        self.offset += u16(piece)

    def entity(self, kind: str, start: int, **extra: Any) -> None:
        if self.offset > start:
            self.entities.append({"type": kind, "offset": start, "length": self.offset - start, **extra})

    def result(self) -> tuple[str, list[JSON]]:
        return "".join(self.parts), sorted(self.entities, key=lambda e: (e["offset"], -e["length"]))


def _entity_error(src: str, index: int, message: str) -> ApiError:
    return bad(f"can't parse entities: {message} at byte offset {len(src[:index].encode())}")


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

    def reserved(at: int) -> ApiError:
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


def auto_entities(text: str) -> list[JSON]:
    """The entities Telegram detects on its own in plain text (commands drive PTB's CommandHandler)."""
    return [
        {"type": match.lastgroup, "offset": u16(text[: match.start()]), "length": u16(match[0])}
        for match in _AUTO_ENTITY_RE.finditer(text)
    ]


def format_text(text: str, parse_mode: str | None, entities: Any) -> tuple[str, list[JSON]]:
    if parse_mode:
        parser = {"html": _parse_html, "markdownv2": _parse_markdown_v2, "markdown": _parse_markdown}.get(
            parse_mode.lower()
        )
        if parser is None:
            raise bad(f"unsupported parse_mode {parse_mode}")
        return parser(text)
    if entities:
        if not isinstance(entities, list):
            raise bad("can't parse entities JSON object")
        return text, entities
    return text, auto_entities(text)
