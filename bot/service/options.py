"""Options written into a prompt (`--ar 3:4 --seed 7 --no hats`), parsed into request parameters."""

from __future__ import annotations

import math
import re
import shlex
import unicodedata
from collections.abc import Callable
from typing import Any

from bot import messages
from bot.errors import UserError
from engine.request import OUTPUT_FORMATS, size_for_aspect


def _shown(text: str) -> str:
    """A word of the user's as a reply quotes it: cut short, so a reply stays within a chat message."""
    return text if len(text) <= 40 else text[:39] + "…"


def _bad(flag: str, value: str, expected: str) -> UserError:
    return UserError(
        messages.BAD_OPTION.format(flag=_shown(flag), value=_shown(value), expected=messages.expected(expected))
    )


def _int(flag: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise _bad(flag, value, "a whole number") from None


def _float(flag: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise _bad(flag, value, "a number") from None
    if not math.isfinite(number):  # "nan", "inf" and "1e999" parse as floats; no backend range holds them
        raise _bad(flag, value, "a finite number")
    return number


def _aspect(flag: str, value: str) -> dict[str, Any]:
    size = size_for_aspect(value)
    if size is None:
        raise UserError(messages.BAD_ASPECT.format(value=_shown(value)))
    return {"width": size[0], "height": size[1]}


def _format(flag: str, value: str) -> str:
    value = value.lower().replace("jpg", "jpeg")
    if value not in OUTPUT_FORMATS:
        raise _bad(flag, value, "jpeg, png or webp")
    return value


def _mode(flag: str, value: str) -> str:
    """fal's SDXL PuLID mode: "fidelity" or "extreme style" (written "style", "extreme-style" too)."""
    mode = MODES.get(value.strip().lower().replace("-", " ").replace("_", " "))
    if mode is None:
        raise _bad(flag, value, "fidelity or extreme-style")
    return mode


def _style(flag: str, value: str) -> str:
    return value.strip().lower()


MODES = {"fidelity": "fidelity", "style": "extreme style", "extreme style": "extreme style"}
STRICT = "--strict"  # a flag without a value: refuse rather than render anything other than what was asked

# flag -> (parameter, parser); a parser returning a dict sets several parameters.
FLAGS: dict[str, tuple[str, Callable[[str, str], Any]]] = {
    "--ar": ("aspect", _aspect),
    "--aspect": ("aspect", _aspect),
    "--seed": ("seed", _int),
    "--steps": ("steps", _int),
    "--id-weight": ("id_weight", _float),
    "--iw": ("id_weight", _float),
    "--guidance": ("guidance", _float),
    "--start-step": ("start_step", _int),
    "--true-cfg": ("true_cfg", _float),
    "--n": ("num_images", _int),
    "--format": ("output_format", _format),
    "--mode": ("mode", _mode),
    "--style": ("style", _style),
}
NEGATIVE = "--no"
# Bidirectional overrides, embeddings, isolates and marks: they make a prompt read differently from what
# it holds (and in a caption, what follows it).
_BIDI = frozenset([0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)])
# What would notify someone if echoed back in a caption: Telegram @usernames (5-32 characters), Discord's
# @everyone/@here and <@user>, <@&role>, <#channel> mentions. An e-mail address is not a mention.
_ADDRESSED = re.compile(r"^\s*@[a-z][a-z0-9_]{4,31}(?:\s+|$)", re.IGNORECASE)
_MENTION = re.compile(r"(?<![\w.@])@(?:everyone|here|[a-z][a-z0-9_]{4,31})(?!\w)|<(?:@[!&]?|#)\d+>", re.IGNORECASE)


def checked_text(text: str, what: str = "prompt") -> str:
    """``text`` if it holds no control or bidirectional formatting character and mentions nobody."""
    for char in text:
        if (unicodedata.category(char) == "Cc" and char not in "\t\n\r") or ord(char) in _BIDI:
            raise UserError(messages.hidden_characters(what, f"U+{ord(char):04X}"))
    mention = _MENTION.search(text)
    if mention:
        raise UserError(messages.prompt_mentions(what, _shown(mention.group())))
    return text


def checked_params(params: dict[str, Any]) -> dict[str, Any]:
    """Parameters given as structured fields (slash-command options), held to the same rules as typed ones."""
    for name, value in params.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise _bad(name, str(value), "a finite number")
        if isinstance(value, str):
            checked_text(value, messages.PARAMETER_NAMES.get(name, name))
            if len(value) > messages.MAX_PROMPT:
                raise UserError(messages.text_too_long(messages.PARAMETER_NAMES.get(name, name), messages.MAX_PROMPT))
    return params


def parse_prompt(text: str) -> tuple[str, dict[str, Any]]:
    """Split "<prompt> [--flag value …] [--no <negative words>]" into the prompt and parameters.

    A leading @name is whom the message is addressed to (a bot is called so in a group), not part of the
    prompt; a mention anywhere else is refused, since the prompt is echoed back with the result.
    """
    text = _ADDRESSED.sub("", text, count=1)
    checked_text(text)
    head, sep, negative = text.partition(f" {NEGATIVE} ")
    if not sep and text.startswith(f"{NEGATIVE} "):
        head, negative, sep = "", text[len(NEGATIVE) + 1 :], " "
    try:
        words = shlex.split(head)
    except ValueError:
        words = head.split()
    prompt_words: list[str] = []
    params: dict[str, Any] = {}
    index = 0
    while index < len(words):
        word = words[index]
        if word.startswith("--") and len(word) > 2:
            flag = word.lower()
            if flag == STRICT:
                params["strict"] = True
                index += 1
                continue
            if flag not in FLAGS:
                known = ", ".join(sorted([*FLAGS, STRICT]))
                raise UserError(messages.UNKNOWN_OPTION.format(flag=_shown(word), known=known))
            if index + 1 >= len(words):
                raise UserError(messages.MISSING_VALUE.format(flag=_shown(word)))
            name, parse = FLAGS[flag]
            value = parse(word, words[index + 1])
            if isinstance(value, dict):
                params.update(value)
            else:
                params[name] = value
            index += 2
            continue
        prompt_words.append(word)
        index += 1
    if sep and negative.strip():
        params["negative_prompt"] = negative.strip()
    prompt = " ".join(prompt_words).strip()
    if not prompt:
        raise UserError(messages.EMPTY_PROMPT)
    if len(prompt) > messages.MAX_PROMPT:
        raise UserError(messages.PROMPT_TOO_LONG.format(limit=messages.MAX_PROMPT))
    return prompt, checked_params(params)
