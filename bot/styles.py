"""Style presets: a prompt prefix and suffix, a negative prompt and parameters, chosen by name (--style).

LIKENESS_STYLES names a JSON file of presets; without it the presets below ship with the bot. A preset's
parameters are defaults: what the user sets explicitly wins.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from bot import messages
from bot.errors import OperatorError
from engine.request import GenerationRequest

NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
# What a preset may set: the tunable parameters, not the faces, the prompt or how many images.
PARAMETERS = frozenset(f.name for f in fields(GenerationRequest)) - {"prompt", "faces", "num_images", "seed"}
MAX_PRESETS = 25  # what one Discord autocomplete answer lists


@dataclass(frozen=True)
class Style:
    name: str
    description: str  # English, or as the operator wrote it
    prefix: str = ""
    suffix: str = ""
    negative: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)
    descriptions: Mapping[str, str] = field(default_factory=dict)  # by language, where the operator gave them

    def apply(self, prompt: str, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The prompt within the preset's prefix and suffix, and the parameters over the preset's."""
        styled = " ".join(part for part in (self.prefix, prompt) if part)
        if self.suffix:
            styled = f"{styled}, {self.suffix}"
        merged = {**self.params, **params}
        if self.negative:
            given = params.get("negative_prompt")
            merged["negative_prompt"] = f"{given}, {self.negative}" if given else self.negative
        return styled, merged


# The presets that ship with the bot; their descriptions are translated (messages.STYLE_DESCRIPTIONS).
DEFAULT_STYLES: tuple[Style, ...] = (
    Style(
        "cinematic",
        messages.STYLE_DESCRIPTIONS["cinematic"],
        prefix="cinematic film still of",
        suffix="dramatic lighting, shallow depth of field, anamorphic lens, film grain",
        negative="cartoon, illustration, flat lighting",
        params={"guidance": 4.0},
    ),
    Style(
        "anime",
        messages.STYLE_DESCRIPTIONS["anime"],
        prefix="anime illustration of",
        suffix="cel shading, clean line art, vibrant colours, detailed eyes",
        negative="photo, photorealistic, 3d render",
    ),
    Style(
        "oil-painting",
        messages.STYLE_DESCRIPTIONS["oil-painting"],
        prefix="oil painting of",
        suffix="visible brush strokes, rich impasto texture, classical portrait, canvas",
        negative="photo, digital art, smooth skin",
    ),
    Style(
        "pixel-art",
        messages.STYLE_DESCRIPTIONS["pixel-art"],
        prefix="pixel art portrait of",
        suffix="16-bit, limited palette, crisp pixels, retro game sprite",
        negative="blurry, photo, smooth gradients",
    ),
    Style(
        "studio-portrait",
        messages.STYLE_DESCRIPTIONS["studio-portrait"],
        prefix="professional studio portrait photo of",
        suffix="soft box lighting, neutral grey backdrop, 85mm lens, sharp focus",
        negative="cartoon, painting, harsh shadows",
    ),
)


def load_styles(path: Path | None) -> dict[str, Style]:
    """The presets by name: those of the JSON file at ``path``, or the shipped ones. A malformed file stops
    the start with one line naming what is wrong."""
    if path is None:
        return {style.name: style for style in DEFAULT_STYLES}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise OperatorError(f"LIKENESS_STYLES: cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise OperatorError(f"LIKENESS_STYLES: {path} is not JSON: {exc}") from None
    if not isinstance(data, dict) or not data:
        raise OperatorError(f"LIKENESS_STYLES: {path} must hold an object of presets by name")
    if len(data) > MAX_PRESETS:
        raise OperatorError(f"LIKENESS_STYLES: at most {MAX_PRESETS} presets")
    return {name: _preset(str(name), preset) for name, preset in data.items()}


def _preset(name: str, preset: Any) -> Style:
    def bad(why: str) -> OperatorError:
        return OperatorError(f"LIKENESS_STYLES: preset {name!r}: {why}")

    if not NAME.fullmatch(name):
        raise bad("names use a-z, 0-9, - and _ (up to 32 characters)")
    if not isinstance(preset, dict):
        raise bad("must be an object")
    unknown = set(preset) - {"description", "prefix", "suffix", "negative", "params"}
    if unknown:
        raise bad(f"unknown key {sorted(unknown)[0]!r}")
    description = preset.get("description", "")
    descriptions: dict[str, str] = {}
    if isinstance(description, dict):
        descriptions = {str(k): str(v) for k, v in description.items()}
        description = descriptions.get("en") or next(iter(descriptions.values()), "")
    texts = {key: preset.get(key, "") for key in ("prefix", "suffix", "negative")}
    if not all(isinstance(text, str) for text in (description, *texts.values())):
        raise bad("description, prefix, suffix and negative are text")
    params = preset.get("params", {})
    if not isinstance(params, dict):
        raise bad("params must be an object")
    for key in params:
        if key not in PARAMETERS:
            raise bad(f"params: {key!r} is not one of {', '.join(sorted(PARAMETERS))}")
    return Style(name, description, texts["prefix"], texts["suffix"], texts["negative"], params, descriptions)
