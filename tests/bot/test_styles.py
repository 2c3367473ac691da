"""Style presets: the shipped set, an operator's JSON file, and the one-line errors of a malformed one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot import i18n
from bot.errors import OperatorError
from bot.service.styles import Styles
from bot.styles import DEFAULT_STYLES, load_styles


def test_the_shipped_presets_apply_their_prefix_suffix_negative_and_parameters() -> None:
    presets = load_styles(None)
    assert list(presets) == [style.name for style in DEFAULT_STYLES]
    prompt, params = presets["cinematic"].apply("me on a pier", {"negative_prompt": "hats", "guidance": 3.0})
    assert prompt.startswith("cinematic film still of me on a pier, dramatic lighting")
    assert params == {"guidance": 3.0, "negative_prompt": "hats, cartoon, illustration, flat lighting"}
    _prompt, defaults = presets["cinematic"].apply("me", {})
    assert defaults["guidance"] == 4.0  # the preset's value where the user set none
    with i18n.language("es"):
        assert "• pixel-art — Pixel art retro de 16 bits" in Styles(presets).listing().text


def test_an_operators_file_replaces_them_with_descriptions_by_language(tmp_path: Path) -> None:
    path = tmp_path / "styles.json"
    path.write_text(
        json.dumps(
            {
                "noir": {
                    "description": {"en": "Black and white crime film", "de": "Schwarzweißer Krimi"},
                    "prefix": "film noir still of",
                    "params": {"steps": 30},
                }
            }
        )
    )
    presets = load_styles(path)
    assert list(presets) == ["noir"]
    styles = Styles(presets)
    assert styles.listing().text.splitlines()[1] == "• noir — Black and white crime film"
    with i18n.language("de"):
        assert styles.listing().text.splitlines()[1] == "• noir — Schwarzweißer Krimi"
    assert presets["noir"].apply("me", {})[1] == {"steps": 30}


@pytest.mark.parametrize(
    ("content", "error"),
    [
        ("{", "is not JSON"),
        ("[]", "must hold an object of presets by name"),
        ('{"Bad Name": {}}', "preset 'Bad Name': names use a-z"),
        ('{"x": {"prefix": 3}}', "preset 'x': description, prefix, suffix and negative are text"),
        ('{"x": {"params": {"prompt": "y"}}}', "preset 'x': params: 'prompt' is not one of"),
        ('{"x": {"colour": "red"}}', "preset 'x': unknown key 'colour'"),
    ],
)
def test_a_malformed_file_stops_the_start_with_one_line(tmp_path: Path, content: str, error: str) -> None:
    path = tmp_path / "styles.json"
    path.write_text(content)
    with pytest.raises(OperatorError, match="LIKENESS_STYLES") as failed:
        load_styles(path)
    assert error in str(failed.value) and "\n" not in str(failed.value)
    with pytest.raises(OperatorError, match="cannot read"):
        load_styles(tmp_path / "missing.json")
