"""Options written into a prompt (`--ar 3:4 --seed 7 --no hats`), parsed into request parameters."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from typing import Any

from bot import messages
from bot.errors import UserError
from engine.request import OUTPUT_FORMATS, size_for_aspect


def _int(flag: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise UserError(messages.BAD_OPTION.format(flag=flag, value=value, expected="a whole number")) from None


def _float(flag: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise UserError(messages.BAD_OPTION.format(flag=flag, value=value, expected="a number")) from None


def _aspect(flag: str, value: str) -> dict[str, Any]:
    size = size_for_aspect(value)
    if size is None:
        raise UserError(messages.BAD_ASPECT.format(value=value))
    return {"width": size[0], "height": size[1]}


def _format(flag: str, value: str) -> str:
    value = value.lower().replace("jpg", "jpeg")
    if value not in OUTPUT_FORMATS:
        raise UserError(messages.BAD_OPTION.format(flag=flag, value=value, expected="jpeg, png or webp"))
    return value


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
}
NEGATIVE = "--no"


def parse_prompt(text: str) -> tuple[str, dict[str, Any]]:
    """Split "<prompt> [--flag value …] [--no <negative words>]" into the prompt and parameters."""
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
            if flag not in FLAGS:
                raise UserError(messages.UNKNOWN_OPTION.format(flag=word, known=", ".join(sorted(FLAGS))))
            if index + 1 >= len(words):
                raise UserError(messages.MISSING_VALUE.format(flag=word))
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
    return prompt, params
