"""Likeness of a rendered image to its identity: the best-matching face in the output, or none."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engine.judge.face import Embedding, Face, FaceJudge, JudgeMismatchError, Likeness, compare


@dataclass(frozen=True)
class OutputScore:
    """How one output image scored. ``likeness`` is None when the output has no face (which fails the
    threshold like a poor score does); ``face`` is the face that matched best."""

    judge: str
    likeness: Likeness | None
    face: Face | None
    faces: int

    @property
    def score(self) -> float:
        """The likeness score, 0 for an output without a face."""
        return 0.0 if self.likeness is None else self.likeness.score

    def passes(self, min_score: float) -> bool:
        return self.likeness is not None and self.likeness.score >= min_score


def score_output(judge: FaceJudge, image: np.ndarray, identity: Sequence[Embedding]) -> OutputScore:
    """Score an RGB output against an identity's embeddings (made by the same judge).

    Every confident face in the output is compared with every photo of the identity, and the closest pair
    counts: a scene with bystanders still scores the face that is meant to be the user, and an identity
    with several photos is matched by the photo it resembles most.
    """
    if not identity:
        raise ValueError("an identity needs at least one embedding to score against")
    foreign = {embedding.judge for embedding in identity} - {judge.name}
    if foreign:
        raise JudgeMismatchError(f"identity embedded by {sorted(foreign)} cannot be scored by {judge.name!r}")
    faces = judge.detect(image)
    # Unconfident detections are mostly face-like texture; they are scored only when nothing better exists.
    candidates = [face for face in faces if face.confident] or faces
    best: tuple[Likeness, Face] | None = None
    for face in candidates:
        embedding = judge.embed(image, face)
        for reference in identity:
            likeness = compare(judge, embedding, reference)
            if best is None or likeness.distance < best[0].distance:
                best = (likeness, face)
    if best is None:
        return OutputScore(judge=judge.name, likeness=None, face=None, faces=0)
    return OutputScore(judge=judge.name, likeness=best[0], face=best[1], faces=len(faces))


def better(a: OutputScore, b: OutputScore) -> OutputScore:
    """The output to deliver of two attempts: the higher score, the first on a tie."""
    return b if b.score > a.score else a
