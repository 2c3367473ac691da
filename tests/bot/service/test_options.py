"""Options written into a prompt: `--flag value` pairs and `--no …` become request parameters."""

from __future__ import annotations

from typing import Any

import pytest

from bot import messages
from bot.errors import UserError
from bot.service.options import FLAGS, checked_params, parse_prompt
from engine.request import size_for_aspect


@pytest.mark.parametrize(
    ("text", "prompt", "params"),
    [
        ("a knight in armour", "a knight in armour", {}),
        ("a knight --seed 7", "a knight", {"seed": 7}),
        ("--steps 12 a knight --guidance 3.5", "a knight", {"steps": 12, "guidance": 3.5}),
        ("a knight --iw 0.8 --n 2", "a knight", {"id_weight": 0.8, "num_images": 2}),
        (
            "a knight --id-weight 1 --start-step 2 --true-cfg 1.5",
            "a knight",
            {"id_weight": 1.0, "start_step": 2, "true_cfg": 1.5},
        ),
        ("a knight --format JPG", "a knight", {"output_format": "jpeg"}),
        ("a knight --SEED 3", "a knight", {"seed": 3}),
        ("a knight --no hats, swords", "a knight", {"negative_prompt": "hats, swords"}),
        ("a knight --seed 1 --no hats --seed 2", "a knight", {"seed": 1, "negative_prompt": "hats --seed 2"}),
        ('"a knight" in "the rain" --seed 4', "a knight in the rain", {"seed": 4}),
        ("it's a knight --seed 4", "it's a knight", {"seed": 4}),  # an unbalanced quote falls back to spaces
        ("a knight --no   ", "a knight", {}),
    ],
)
def test_options_become_parameters_and_the_rest_is_the_prompt(text: str, prompt: str, params: dict[str, Any]) -> None:
    assert parse_prompt(text) == (prompt, params)


@pytest.mark.parametrize("flag", ["--ar", "--aspect"])
def test_an_aspect_ratio_sets_the_size(flag: str) -> None:
    size = size_for_aspect("3:4")
    assert size is not None
    assert parse_prompt(f"a knight {flag} 3:4") == ("a knight", {"width": size[0], "height": size[1]})


def test_a_prompt_of_only_a_negative_is_empty() -> None:
    with pytest.raises(UserError) as empty:
        parse_prompt("--no hats")
    assert empty.value.message == messages.EMPTY_PROMPT


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", messages.EMPTY_PROMPT),
        ("--seed 3", messages.EMPTY_PROMPT),
        ("x" * (messages.MAX_PROMPT + 1), messages.PROMPT_TOO_LONG.format(limit=messages.MAX_PROMPT)),
        ("a knight --seed", messages.MISSING_VALUE.format(flag="--seed")),
        ("a knight --seed seven", messages.BAD_OPTION.format(flag="--seed", value="seven", expected="a whole number")),
        ("a knight --guidance lots", messages.BAD_OPTION.format(flag="--guidance", value="lots", expected="a number")),
        (
            "a knight --format gif",
            messages.BAD_OPTION.format(flag="--format", value="gif", expected="jpeg, png or webp"),
        ),
        ("a knight --ar wide", messages.BAD_ASPECT.format(value="wide")),
        ("a knight --ar 10:1", messages.BAD_ASPECT.format(value="10:1")),
    ],
)
def test_bad_options_say_what_is_expected(text: str, message: str) -> None:
    with pytest.raises(UserError) as refused:
        parse_prompt(text)
    assert refused.value.message == message


def test_an_unknown_option_lists_the_known_ones() -> None:
    with pytest.raises(UserError) as refused:
        parse_prompt("a knight --tone noir")
    known = ", ".join(sorted([*FLAGS, "--strict"]))
    assert refused.value.message == messages.UNKNOWN_OPTION.format(flag="--tone", known=known)
    assert "--ar" in refused.value.message and "--seed" in refused.value.message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "a knight --guidance nan",
            messages.BAD_OPTION.format(flag="--guidance", value="nan", expected="a finite number"),
        ),
        ("a knight --iw inf", messages.BAD_OPTION.format(flag="--iw", value="inf", expected="a finite number")),
        (
            "a knight --true-cfg -Infinity",
            messages.BAD_OPTION.format(flag="--true-cfg", value="-Infinity", expected="a finite number"),
        ),
        (
            "a knight --guidance 1e999",
            messages.BAD_OPTION.format(flag="--guidance", value="1e999", expected="a finite number"),
        ),
        ("a knight --steps 1e9", messages.BAD_OPTION.format(flag="--steps", value="1e9", expected="a whole number")),
        (
            "a knight --seed " + "9" * 5000,
            messages.BAD_OPTION.format(flag="--seed", value="9" * 39 + "…", expected="a whole number"),
        ),
    ],
    ids=["nan", "inf", "minus-infinity", "overflow", "float-for-int", "5000-digits"],
)
def test_numbers_no_backend_could_take_are_refused_by_the_parser(text: str, message: str) -> None:
    with pytest.raises(UserError) as refused:
        parse_prompt(text)
    assert refused.value.message == message


@pytest.mark.parametrize(
    ("text", "codepoint"),
    [
        ("a knight\x00 in armour", "U+0000"),
        ("a knight \x1b[31m in red", "U+001B"),
        ("a knight \x7f", "U+007F"),
        ("a knight \x85 next line", "U+0085"),
        ("a knight \u202eromra ni", "U+202E"),
        ("a knight \u2066isolated\u2069", "U+2066"),
        ("a knight \u200f", "U+200F"),
        ("a knight --no hats\u202d", "U+202D"),
    ],
    ids=["nul", "escape", "delete", "c1-next-line", "rtl-override", "isolate", "rtl-mark", "in-the-negative"],
)
def test_control_and_bidirectional_characters_are_refused_by_codepoint(text: str, codepoint: str) -> None:
    with pytest.raises(UserError) as refused:
        parse_prompt(text)
    assert refused.value.message == messages.hidden_characters("prompt", codepoint)


def test_line_breaks_tabs_and_joiners_are_ordinary_text() -> None:
    assert parse_prompt("a knight\nin armour\t--seed 2") == ("a knight in armour", {"seed": 2})
    assert parse_prompt("a family 👨\u200d👩\u200d👧 portrait") == ("a family 👨\u200d👩\u200d👧 portrait", {})


@pytest.mark.parametrize(
    ("text", "mention"),
    [
        ("a portrait of @everyone", "@everyone"),
        ("a knight @here", "@here"),
        ("a knight with <@123456789>", "<@123456789>"),
        ("a knight with <@!123456789>", "<@!123456789>"),
        ("a knight for <@&42424242>", "<@&42424242>"),
        ("a knight in <#987654321>", "<#987654321>"),
        ("a portrait with @durov", "@durov"),
        ("@LikenessBot @someone_else a knight", "@someone_else"),
        ("a knight --no @everyone", "@everyone"),
    ],
)
def test_mentions_are_refused_since_the_prompt_is_echoed_with_the_result(text: str, mention: str) -> None:
    with pytest.raises(UserError) as refused:
        parse_prompt(text)
    assert refused.value.message == messages.prompt_mentions("prompt", mention)


@pytest.mark.parametrize(
    ("text", "prompt"),
    [
        ("@LikenessBot a knight", "a knight"),
        ("a cat @ the beach", "a cat @ the beach"),
        ("ask me@example.com", "ask me@example.com"),
        ("a knight @home", "a knight @home"),  # shorter than any Telegram username
    ],
)
def test_an_addressed_bot_and_at_signs_that_mention_nobody_are_fine(text: str, prompt: str) -> None:
    assert parse_prompt(text) == (prompt, {})


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"guidance": float("nan")},
            messages.BAD_OPTION.format(flag="guidance", value="nan", expected="a finite number"),
        ),
        (
            {"id_weight": float("-inf")},
            messages.BAD_OPTION.format(flag="id_weight", value="-inf", expected="a finite number"),
        ),
        ({"negative_prompt": "hats\u202e"}, messages.hidden_characters("negative prompt", "U+202E")),
        ({"negative_prompt": "@everyone"}, messages.prompt_mentions("negative prompt", "@everyone")),
        (
            {"negative_prompt": "x" * (messages.MAX_PROMPT + 1)},
            messages.text_too_long("negative prompt", messages.MAX_PROMPT),
        ),
    ],
    ids=["nan", "minus-inf", "bidi", "mention", "too-long"],
)
def test_structured_options_are_held_to_the_same_rules(params: dict[str, Any], message: str) -> None:
    with pytest.raises(UserError) as refused:
        checked_params(params)
    assert refused.value.message == message


def test_a_typed_negative_prompt_over_the_limit_is_refused() -> None:
    with pytest.raises(UserError) as refused:
        parse_prompt("a knight --no " + "hats " * 300)
    assert refused.value.message == messages.text_too_long("negative prompt", messages.MAX_PROMPT)


def test_an_unknown_option_of_any_length_is_quoted_short() -> None:
    with pytest.raises(UserError) as refused:
        parse_prompt("a knight --" + "x" * 3000 + " 1")
    assert refused.value.message == messages.UNKNOWN_OPTION.format(
        flag="--" + "x" * 37 + "…", known=", ".join(sorted([*FLAGS, "--strict"]))
    )
