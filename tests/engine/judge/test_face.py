"""Face values: boxes, landmark geometry, embeddings' storage form and the distance-to-score calibration."""

from __future__ import annotations

import numpy as np
import pytest

from engine.judge import Box, Embedding, Face, JudgeMismatchError, Landmarks, compare, score_from_distance
from engine.judge.face import Likeness


def landmarks(left: tuple[float, float], right: tuple[float, float], nose: tuple[float, float]) -> Landmarks:
    return Landmarks(left_eye=left, right_eye=right, nose=nose, points=(left, right, nose, nose, nose))


def test_box_geometry() -> None:
    box = Box(10, 20, 110, 70)
    assert (box.width, box.height, box.side, box.area) == (100, 50, 50, 5000)
    assert box.centre == (60, 45)
    assert box.scaled(2) == Box(20, 40, 220, 140)


def test_yaw_is_the_nose_offset_from_the_eye_midline_in_eye_distances() -> None:
    assert landmarks((40, 50), (80, 50), (60, 80)).yaw() == pytest.approx(0.0)
    assert landmarks((40, 50), (80, 50), (70, 80)).yaw() == pytest.approx(0.25)
    assert landmarks((40, 50), (80, 50), (44, 80)).yaw() == pytest.approx(-0.4)
    # A tilted head that looks straight ahead is still frontal: the offset is measured along the eye line.
    assert landmarks((40, 50), (80, 90), (45, 85)).yaw() == pytest.approx(0.0, abs=1e-9)
    assert landmarks((40, 50), (80, 90), (45, 85)).roll_degrees() == pytest.approx(45.0)
    assert landmarks((40, 50), (40, 50), (40, 80)).yaw() == float("inf")


def test_embedding_bytes_round_trip_keeps_the_vector_and_the_judge() -> None:
    vector = np.linspace(-1, 1, 128, dtype=np.float32)
    data = Embedding("dlib-resnet-v1", vector).to_bytes()
    assert len(data) == 128 * 4
    back = Embedding.from_bytes("dlib-resnet-v1", data)
    assert back.judge == "dlib-resnet-v1"
    assert back.vector.dtype == np.float32 and np.array_equal(back.vector, vector)


@pytest.mark.parametrize(
    ("distance", "score"),
    [(0.0, 1.0), (0.3, 0.75), (0.6, 0.5), (0.9, 0.25), (1.2, 0.0), (2.0, 0.0)],
)
def test_score_is_linear_in_distance_with_one_half_at_the_match_distance(distance: float, score: float) -> None:
    assert score_from_distance(distance, 0.6) == pytest.approx(score)


def test_percent_is_the_rounded_score() -> None:
    assert Likeness("j", 0.17, 0.864).percent == 86
    assert Likeness("j", 0.0, 1.0).percent == 100


class EuclideanJudge:
    """A judge reduced to its distance, for comparing hand-made vectors."""

    name = "euclid"
    match_distance = 1.0

    def detect(self, image: np.ndarray) -> list[Face]:
        raise AssertionError("not used")

    def embed(self, image: np.ndarray, face: Face) -> Embedding:
        raise AssertionError("not used")

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        return float(np.linalg.norm(a - b))


def test_compare_scores_with_the_judges_calibration_and_refuses_foreign_vectors() -> None:
    judge = EuclideanJudge()
    a = Embedding("euclid", np.zeros(3, dtype=np.float32))
    b = Embedding("euclid", np.array([0.5, 0, 0], dtype=np.float32))
    likeness = compare(judge, a, b)
    assert likeness == Likeness(judge="euclid", distance=0.5, score=0.75)
    with pytest.raises(JudgeMismatchError, match="'other'"):
        compare(judge, a, Embedding("other", b.vector))
