"""`likeness generate` with the face judge, as an operator runs it: each output's likeness on stderr, a poor one
rendered again, and a bad photo refused in one line before any provider is called."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.bot.test_cli_generate import likeness
from tests.engine.judge import photos
from tests.fakes import fal
from tests.fakes.fal import FakeFal, FalScript

pytestmark = pytest.mark.timeout(120)


def jpeg(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="JPEG", quality=95)
    return out.getvalue()


def written(tmp_path: Path, name: str, image: np.ndarray) -> Path:
    path = tmp_path / name
    path.write_bytes(jpeg(image))
    return path


@pytest.fixture
async def fake_fal() -> AsyncIterator[FakeFal]:
    async with fal.start_fal() as server:
        yield server


def env(server: FakeFal) -> dict[str, str]:
    return {"LIKENESS_FAL__KEY": fal.KEY, "LIKENESS_FAL__BASE_URL": server.url}


async def test_each_output_s_likeness_is_printed_and_a_poor_one_rendered_again(
    tmp_path: Path, fake_fal: FakeFal
) -> None:
    rendered = photos.rotated(photos.scaled(photos.flipped(photos.tom()), 4), 6)
    fake_fal.next_scripts = [
        FalScript(queue_ticks=0, run_ticks=0, output=jpeg(photos.astronaut())),
        FalScript(queue_ticks=0, run_ticks=0, output=jpeg(rendered)),
    ]
    tom = written(tmp_path, "tom.jpg", photos.scaled(photos.tom(), 3))
    code, out, err = await likeness(
        tmp_path, env(fake_fal), "generate", "--face", str(tom), "--prompt", "a lighthouse keeper",
        "--backend", "fal-flux-pulid", "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 0, err
    [path] = [Path(line) for line in out.splitlines()]
    assert path.read_bytes() == jpeg(rendered)
    assert "likeness below the threshold: rendering again on fal-flux-pulid (free)" in err
    [scored] = [line for line in err.splitlines() if line.startswith(f"{path}: likeness ")]
    assert scored.endswith("% (dlib-resnet-v1)") and int(scored.split("likeness ")[1].split("%")[0]) > 70
    assert len(fake_fal.requests("submit")) == 2


@pytest.mark.parametrize(
    ("image", "said"),
    [
        (photos.group, "I see 5 faces of similar size in that photo"),
        (lambda: photos.darkened(photos.scaled(photos.tom(), 3), 0.2), "That photo is too dark to read the face"),
    ],
)
async def test_a_bad_photo_is_refused_in_one_line_before_any_provider_is_called(
    tmp_path: Path, fake_fal: FakeFal, image: object, said: str
) -> None:
    assert callable(image)
    bad = written(tmp_path, "bad.jpg", image())
    code, out, err = await likeness(
        tmp_path, env(fake_fal), "generate", "--face", str(bad), "--prompt", "x", "--backend", "fal-flux-pulid"
    )
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"likeness: {said}"), err
    assert fake_fal.requests() == []
