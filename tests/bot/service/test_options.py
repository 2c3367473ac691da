"""Options written into a prompt: `--flag value` pairs and `--no …` become request parameters."""

from __future__ import annotations

from typing import Any

import pytest

from bot import messages
from bot.errors import UserError
from bot.service.options import FLAGS, parse_prompt
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
        parse_prompt("a knight --style noir")
    assert refused.value.message == messages.UNKNOWN_OPTION.format(flag="--style", known=", ".join(sorted(FLAGS)))
    assert "--ar" in refused.value.message and "--seed" in refused.value.message
