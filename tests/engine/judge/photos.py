"""Real face photos that ship inside installed packages, and transformed copies of them.

insightface ships ``Tom_Hanks_54745.png`` (one aligned face, 112 px) and ``t1.jpg`` (six people around a
table); scikit-image ships ``astronaut()`` (Eileen Collins, 512 px).
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter


def _insightface_image(name: str) -> np.ndarray:
    spec = importlib.util.find_spec("insightface")
    assert spec is not None and spec.submodule_search_locations
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "images" / name
    return np.asarray(Image.open(path).convert("RGB"))


@cache
def tom() -> np.ndarray:
    return _insightface_image("Tom_Hanks_54745.png")


@cache
def group() -> np.ndarray:
    return _insightface_image("t1.jpg")


@cache
def astronaut() -> np.ndarray:
    from skimage import data

    samples: Any = data
    image: np.ndarray = samples.astronaut()
    return image


def flipped(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image[:, ::-1])


def rotated(image: np.ndarray, degrees: float) -> np.ndarray:
    return np.asarray(Image.fromarray(image).rotate(degrees, resample=Image.Resampling.BICUBIC, expand=True))


def cropped(image: np.ndarray, left: float, top: float, right: float, bottom: float) -> np.ndarray:
    """Keep the given fractions of the width and height."""
    height, width = image.shape[:2]
    return np.ascontiguousarray(image[int(top * height) : int(bottom * height), int(left * width) : int(right * width)])


def blurred(image: np.ndarray, sigma: float) -> np.ndarray:
    return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(sigma)))


def darkened(image: np.ndarray, factor: float) -> np.ndarray:
    return np.asarray(ImageEnhance.Brightness(Image.fromarray(image)).enhance(factor))


def scaled(image: np.ndarray, factor: float) -> np.ndarray:
    height, width = image.shape[:2]
    size = (round(width * factor), round(height * factor))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BICUBIC))


def on_screen(image: np.ndarray, *, period: int = 3, angle: float = 7.0, scale: float = 0.45) -> np.ndarray:
    """A photo of the image shown on a screen: enlarged 4x, every ``period``-th pixel row and column dimmed
    (the gaps between a display's pixels), photographed at a slight angle and from further away."""
    big = np.asarray(Image.fromarray(image).resize((image.shape[1] * 4, image.shape[0] * 4), Image.Resampling.BICUBIC))
    grid = big.astype(np.float32)
    grid[::period, :] *= 0.35
    grid[:, ::period] *= 0.35
    lit = Image.fromarray(np.clip(grid * 1.6, 0, 255).astype(np.uint8))
    shot = lit.rotate(angle, resample=Image.Resampling.BILINEAR)
    size = (round(shot.width * scale), round(shot.height * scale))
    return np.asarray(shot.resize(size, Image.Resampling.BILINEAR))


def tiled(images: list[np.ndarray], columns: int, tile: int = 256) -> np.ndarray:
    """Images side by side on a grid of equal tiles, like a gallery or a video call on a screen."""
    rows = -(-len(images) // columns)
    sheet = np.full((rows * tile, columns * tile, 3), 30, dtype=np.uint8)
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        square = np.asarray(Image.fromarray(image).resize((tile, tile), Image.Resampling.BICUBIC))
        sheet[row * tile : (row + 1) * tile, column * tile : (column + 1) * tile] = square
    return sheet
