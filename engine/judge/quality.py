"""Pixel measures of a photo and its face: luminance, sharpness, a screen's periodic pattern, grids of faces."""

from __future__ import annotations

import numpy as np
from PIL import Image

from engine.judge.face import Box, Face

# Sharpness is measured on the face resized to this many pixels square, so that a face of 90 pixels and
# one of 900 are judged alike.
SHARPNESS_SIDE = 128
# The screen pattern is looked for in (at most) this many pixels square at the image's centre.
SPECTRUM_SIDE = 512
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def grey(image: np.ndarray) -> np.ndarray:
    """Luma (ITU-R BT.601) of an RGB uint8 image, float32 in [0, 255]."""
    luma: np.ndarray = image.astype(np.float32) @ _LUMA
    return luma


def crop(plane: np.ndarray, box: Box) -> np.ndarray:
    """The part of a 2-D plane inside ``box``, clipped to the image (empty when the box lies outside)."""
    height, width = plane.shape[:2]
    left, top = max(0, round(box.left)), max(0, round(box.top))
    right, bottom = min(width, round(box.right)), min(height, round(box.bottom))
    return plane[top:bottom, left:right]


def luminance(plane: np.ndarray) -> float:
    """Mean luma, 0 (black) to 255 (white)."""
    return float(plane.mean()) if plane.size else 0.0


def sharpness(plane: np.ndarray) -> float:
    """Variance of the Laplacian of the region resized to 128 px and scaled to unit contrast.

    Dividing by the region's standard deviation keeps a dim but sharp face from reading as blurred; the
    darkness has its own measure.
    """
    if plane.shape[0] < 3 or plane.shape[1] < 3:
        return 0.0
    resized = Image.fromarray(plane.astype(np.float32), mode="F").resize(
        (SHARPNESS_SIDE, SHARPNESS_SIDE), Image.Resampling.BOX
    )
    values = np.asarray(resized, dtype=np.float64)
    spread = values.std()
    if spread < 1.0:
        return 0.0
    values = (values - values.mean()) / spread
    laplacian = values[:-2, 1:-1] + values[2:, 1:-1] + values[1:-1, :-2] + values[1:-1, 2:] - 4.0 * values[1:-1, 1:-1]
    return float(laplacian.var())


def screen_pattern(plane: np.ndarray) -> float:
    """How strongly one spatial frequency stands out of the image's spectrum (natural log units).

    A photo of a screen often resolves the screen's pixel grid or its moiré: sharp, isolated peaks in the
    upper half of the spectrum that natural scenes (whose spectrum falls smoothly) do not have. Measured
    as the highest peak above the local mean of the log magnitude in a 9x9 neighbourhood. It cannot see a
    screenshot, nor a photo of a screen taken too far or too soft for the grid to show, and fine regular
    fabrics can raise it.
    """
    height, width = plane.shape
    side = min(height, width, SPECTRUM_SIDE)
    if side < 32:
        return 0.0
    top, left = (height - side) // 2, (width - side) // 2
    square = plane[top : top + side, left : left + side].astype(np.float64)
    square = square - square.mean()
    window = np.outer(np.hanning(side), np.hanning(side))
    magnitude = np.log1p(np.abs(np.fft.fftshift(np.fft.fft2(square * window))))
    prominence = magnitude - _box_mean(magnitude, 9)
    ys, xs = np.mgrid[0:side, 0:side]
    radius = np.hypot(ys - side / 2, xs - side / 2) / (side / 2)
    band = (radius > 0.2) & (radius < 0.95)
    return float(prominence[band].max())


def _box_mean(values: np.ndarray, size: int) -> np.ndarray:
    pad = size // 2
    padded = np.pad(values, pad, mode="reflect")
    summed = np.cumsum(np.cumsum(padded, axis=0), axis=1)
    summed = np.pad(summed, ((1, 0), (1, 0)))
    total = summed[size:, size:] - summed[:-size, size:] - summed[size:, :-size] + summed[:-size, :-size]
    mean: np.ndarray = total / (size * size)
    return mean


def face_grid(faces: list[Face], *, min_faces: int = 4, size_ratio: float = 1.3, tolerance: float = 0.15) -> bool:
    """Whether the faces look like tiles of a screen: a gallery, a contact sheet, a video call.

    At least ``min_faces`` faces of nearly one size (largest over smallest side within ``size_ratio``),
    each sharing a row with another face and a column with another face (centres within ``tolerance`` of a
    face's side). A group photo rarely lines its people up in both directions. Unconfident detections
    count too: equal sizes on a grid are evidence enough, and a tile may be small or soft.
    """
    tiles = [face.box for face in faces]
    if len(tiles) < min_faces:
        return False
    sides = [box.side for box in tiles]
    if max(sides) > size_ratio * min(sides):
        return False
    slack = tolerance * float(np.mean(sides))

    def shares(axis: int, box: Box) -> bool:
        return any(other is not box and abs(other.centre[axis] - box.centre[axis]) <= slack for other in tiles)

    return all(shares(0, box) and shares(1, box) for box in tiles)
