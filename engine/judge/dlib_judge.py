"""The CPU face judge: dlib's HOG detector, 5-point landmarks and ResNet recognizer, weights from a package."""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from engine.judge.face import Box, Embedding, Face, Landmarks, Point

SHAPE_FILE = "shape_predictor_5_face_landmarks.dat"
RECOGNIZER_FILE = "dlib_face_recognition_resnet_model_v1.dat"


class JudgeUnavailableError(RuntimeError):
    """The judge's library or model files are not installed; the message says what to install."""


def packaged_models_dir() -> Path:
    """Where ``face-recognition-models`` keeps its files, found without importing the package: its
    ``__init__`` needs ``pkg_resources``, which recent setuptools no longer ships."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise JudgeUnavailableError("the dlib face judge needs the face-recognition-models package")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


class DlibJudge:
    """dlib's HOG face detector, its 5-point shape predictor and its ResNet 128-D face recognizer.

    The recognizer's own verification threshold is a Euclidean distance of 0.6 (99.38% on LFW), which
    becomes the match distance. The 68-point shape predictor that the same package ships is never loaded:
    its training data excludes commercial use. The CNN (MMOD) detector is not used either: on a CPU it takes
    seconds per photo where HOG takes a fraction of one.

    HOG finds faces of about 80 pixels and more; images whose longer side is at most ``upsample_below_px``
    are searched at twice their size (faces from 40 pixels), and images larger than ``max_detect_px`` are
    searched at that size, which bounds the time per photo. A larger image in which nothing was found is
    searched once more at twice the size, so that a small face is reported as small rather than missing.
    Landmarks and embeddings always use the full-resolution image. One call at a time per instance (a
    lock serialises them).
    """

    name = "dlib-resnet-v1"
    match_distance = 0.6

    def __init__(
        self,
        *,
        models_dir: Path | None = None,
        detect_threshold: float = 0.0,
        confident_score: float = 0.5,
        upsample_below_px: int = 800,
        max_detect_px: int = 1280,
    ) -> None:
        try:
            import dlib
        except ImportError as exc:
            raise JudgeUnavailableError("the dlib face judge needs the dlib-bin package") from exc
        directory = models_dir or packaged_models_dir()
        for file in (SHAPE_FILE, RECOGNIZER_FILE):
            if not (directory / file).is_file():
                raise JudgeUnavailableError(f"face judge model file missing: {directory / file}")
        self._detector: Any = dlib.get_frontal_face_detector()
        self._shape: Any = dlib.shape_predictor(str(directory / SHAPE_FILE))
        self._recognizer: Any = dlib.face_recognition_model_v1(str(directory / RECOGNIZER_FILE))
        self._rectangle: Any = dlib.rectangle
        self._threshold = detect_threshold
        self._confident_score = confident_score
        self._upsample_below_px = upsample_below_px
        self._max_detect_px = max_detect_px
        self._lock = threading.Lock()

    def detect(self, image: np.ndarray) -> list[Face]:
        image = _rgb(image)
        height, width = image.shape[:2]
        longest = max(height, width)
        scale = min(1.0, self._max_detect_px / longest)
        searched = image
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            searched = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
        upsample = 1 if longest <= self._upsample_below_px else 0
        with self._lock:
            rects, scores, _ = self._detector.run(searched, upsample, self._threshold)
            if not rects and not upsample:
                rects, scores, _ = self._detector.run(searched, 1, self._threshold)
            faces = []
            for rect, score in zip(rects, scores, strict=True):
                # Boxes may reach past the image's edges (a face cut by the frame); they are kept as found,
                # so that ``embed`` rebuilds the same landmarks, and clipped where pixels are measured.
                box = Box(rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1).scaled(1 / scale)
                shape = self._shape(image, self._to_rect(box))
                faces.append(
                    Face(
                        box=box,
                        landmarks=_landmarks([(float(p.x), float(p.y)) for p in shape.parts()]),
                        score=float(score),
                        confident=float(score) >= self._confident_score,
                    )
                )
        return sorted(faces, key=lambda face: face.box.area, reverse=True)

    def embed(self, image: np.ndarray, face: Face) -> Embedding:
        image = _rgb(image)
        with self._lock:
            shape = self._shape(image, self._to_rect(face.box))
            vector = np.asarray(self._recognizer.compute_face_descriptor(image, shape), dtype=np.float32)
        return Embedding(judge=self.name, vector=vector)

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        return float(np.linalg.norm(np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32)))

    def _to_rect(self, box: Box) -> Any:
        return self._rectangle(round(box.left), round(box.top), round(box.right) - 1, round(box.bottom) - 1)


def _rgb(image: np.ndarray) -> np.ndarray:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
    return np.ascontiguousarray(image)


def _landmarks(points: list[Point]) -> Landmarks:
    """dlib's 5 points: two corners of one eye, two of the other, then the base of the nose."""
    first = _mean(points[0], points[1])
    second = _mean(points[2], points[3])
    left, right = sorted((first, second))
    return Landmarks(left_eye=left, right_eye=right, nose=points[4], points=tuple(points))


def _mean(a: Point, b: Point) -> Point:
    return ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2)
