"""What a face judge sees: faces with boxes and landmarks, embeddings, and likeness between two of them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

Point = tuple[float, float]


@dataclass(frozen=True)
class Box:
    """A face's box in image pixels (right and bottom exclusive)."""

    left: float
    top: float
    right: float
    bottom: float

    @property
    def width(self) -> float:
        return self.right - self.left

    @property
    def height(self) -> float:
        return self.bottom - self.top

    @property
    def side(self) -> float:
        """The shorter side: what "a face of N pixels" means everywhere in the judge."""
        return min(self.width, self.height)

    @property
    def area(self) -> float:
        return self.width * self.height

    @property
    def centre(self) -> Point:
        return ((self.left + self.right) / 2, (self.top + self.bottom) / 2)

    def scaled(self, factor: float) -> Box:
        return Box(self.left * factor, self.top * factor, self.right * factor, self.bottom * factor)


@dataclass(frozen=True)
class Landmarks:
    """Five points of a face; eyes are named by the side of the image they are on, not the person's."""

    left_eye: Point
    right_eye: Point
    nose: Point
    points: tuple[Point, ...]  # the detector's own five points, in its own order

    @property
    def eye_distance(self) -> float:
        return math.dist(self.left_eye, self.right_eye)

    def yaw(self) -> float:
        """How far the nose sits off the eyes' midline, in eye distances (0 frontal, about 0.5 in profile)."""
        (lx, ly), (rx, ry), (nx, ny) = self.left_eye, self.right_eye, self.nose
        distance = self.eye_distance
        if distance == 0:
            return math.inf
        ux, uy = (rx - lx) / distance, (ry - ly) / distance
        mx, my = (lx + rx) / 2, (ly + ry) / 2
        return ((nx - mx) * ux + (ny - my) * uy) / distance

    def roll_degrees(self) -> float:
        """Tilt of the eye line against the horizontal."""
        (lx, ly), (rx, ry) = self.left_eye, self.right_eye
        return math.degrees(math.atan2(ry - ly, rx - lx))


@dataclass(frozen=True)
class Face:
    """One detected face. ``score`` is on the detector's own scale; ``confident`` is the judge's verdict
    that it is a face and not a face-like texture (which decides whether it counts as a second person)."""

    box: Box
    landmarks: Landmarks
    score: float
    confident: bool


@dataclass(frozen=True, eq=False)
class Embedding:
    """A face's identity vector, tagged with the judge that made it: vectors of two judges never compare."""

    judge: str
    vector: np.ndarray = field(repr=False)  # float32, 1-D

    def to_bytes(self) -> bytes:
        """Little-endian float32, for storage next to the judge's name."""
        return np.asarray(self.vector, dtype="<f4").tobytes()

    @classmethod
    def from_bytes(cls, judge: str, data: bytes) -> Embedding:
        return cls(judge=judge, vector=np.frombuffer(data, dtype="<f4").astype(np.float32))


@dataclass(frozen=True)
class Likeness:
    """How much two faces look like the same person, by one judge. ``score`` is in [0, 1]."""

    judge: str
    distance: float
    score: float

    @property
    def percent(self) -> int:
        """The number shown to users ("likeness 86%")."""
        return round(self.score * 100)


class JudgeMismatchError(ValueError):
    """An embedding made by one judge was compared by another."""


class FaceJudge(Protocol):
    """A face detector, landmarker and recognizer. Implementations are not safe for concurrent calls from
    several threads unless they say so; their calls are CPU- or GPU-bound, so async callers run them in a
    worker thread."""

    @property
    def name(self) -> str:
        """Recorded with every embedding and score it makes."""
        ...

    @property
    def match_distance(self) -> float:
        """The distance at which two faces stop being the same person for this recognizer (score 0.5)."""
        ...

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces of an RGB uint8 (H, W, 3) image, largest first."""
        ...

    def embed(self, image: np.ndarray, face: Face) -> Embedding:
        """The identity vector of one face that ``detect`` found in the same image."""
        ...

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        """Distance between two of this judge's vectors (0 for the same vector)."""
        ...


def score_from_distance(distance: float, match_distance: float) -> float:
    """Linear calibration: 1 at distance 0, 0.5 at the recognizer's match distance, 0 at twice that."""
    return min(1.0, max(0.0, 1.0 - distance / (2.0 * match_distance)))


def compare(judge: FaceJudge, a: Embedding, b: Embedding) -> Likeness:
    """Likeness of two embeddings, both of which ``judge`` must have made."""
    for embedding in (a, b):
        if embedding.judge != judge.name:
            raise JudgeMismatchError(f"embedding made by {embedding.judge!r} cannot be compared by {judge.name!r}")
    distance = judge.distance(a.vector, b.vector)
    return Likeness(judge=judge.name, distance=distance, score=score_from_distance(distance, judge.match_distance))
