"""Pixel measures on synthetic images with known answers, and on the real photos and their copies."""

from __future__ import annotations

import numpy as np
import pytest

from engine.judge import Box, Face, Landmarks
from engine.judge import quality as q
from tests.engine.judge import photos

FRONTAL = Landmarks(left_eye=(0, 0), right_eye=(1, 0), nose=(0.5, 0.5), points=((0, 0),) * 5)


def face(left: float, top: float, side: float, *, confident: bool = True) -> Face:
    return Face(box=Box(left, top, left + side, top + side), landmarks=FRONTAL, score=1.0, confident=confident)


def test_grey_is_bt601_luma() -> None:
    image = np.zeros((1, 3, 3), dtype=np.uint8)
    image[0, 0] = (255, 0, 0)
    image[0, 1] = (0, 255, 0)
    image[0, 2] = (255, 255, 255)
    assert q.grey(image)[0] == pytest.approx([76.245, 149.685, 255.0], abs=1e-3)


def test_crop_clips_a_box_that_reaches_past_the_edges() -> None:
    plane = np.arange(100, dtype=np.float32).reshape(10, 10)
    assert q.crop(plane, Box(-5, 8, 3, 20)).shape == (2, 3)
    assert q.crop(plane, Box(20, 20, 30, 30)).size == 0
    assert q.luminance(q.crop(plane, Box(20, 20, 30, 30))) == 0.0


def test_sharpness_falls_with_blur_and_ignores_contrast() -> None:
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    texture = np.kron(texture, np.ones((4, 4, 1), dtype=np.uint8))  # 256 px of 4-px blocks
    sharp = q.sharpness(q.grey(texture))
    soft = q.sharpness(q.grey(photos.blurred(texture, 3)))
    dim = q.sharpness(q.grey(photos.darkened(texture, 0.3)))
    assert sharp > 10 * soft
    assert dim == pytest.approx(sharp, rel=0.1)
    assert q.sharpness(np.full((50, 50), 90, dtype=np.float32)) == 0.0  # flat: nothing to be sharp
    assert q.sharpness(np.zeros((2, 2), dtype=np.float32)) == 0.0


def test_screen_pattern_stands_out_on_a_pixel_grid_and_not_on_photos() -> None:
    natural = [photos.tom(), photos.astronaut(), photos.group(), photos.scaled(photos.astronaut(), 2)]
    for image in natural:
        assert q.screen_pattern(q.grey(image)) < 1.8
    for image in (photos.on_screen(photos.astronaut()), photos.on_screen(photos.tom(), scale=0.6)):
        assert q.screen_pattern(q.grey(image)) > 2.5
    assert q.screen_pattern(np.zeros((16, 16), dtype=np.float32)) == 0.0


def test_face_grid_needs_four_similar_faces_in_rows_and_columns() -> None:
    grid = [face(x, y, 100) for x in (0, 200) for y in (0, 200)]
    assert q.face_grid(grid)
    assert q.face_grid([*grid, face(400, 0, 100), face(400, 200, 100)])
    assert not q.face_grid(grid[:3])
    # One face out of line, or of another size: not a screen of tiles. A soft tile still counts.
    assert not q.face_grid([*grid[:3], face(260, 230, 100)])
    assert not q.face_grid([*grid[:3], face(200, 200, 150)])
    assert q.face_grid([*grid[:3], face(200, 200, 100, confident=False)])
