"""The ArcFace judge on CPU with tiny antelopev2-shaped ONNX models: detection, embeddings, the gate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.judge import (
    Enrollment,
    JudgeSettings,
    JudgeUnavailableError,
    Refusal,
    RefusalReason,
    enroll,
    open_judge,
    score_output,
)
from engine.judge.arcface import ArcFaceJudge
from engine.local.faces import InsightFaceAnalyzer
from tests.engine.local.face_models import KEYPOINTS, face_photo, write_antelope_dir


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_antelope_dir(tmp_path_factory.mktemp("antelopev2"))


@pytest.fixture(scope="module")
def judge(model_dir: Path) -> ArcFaceJudge:
    return ArcFaceJudge.from_model_dir(model_dir, det_size=256)


def test_detects_boxes_keypoints_and_scores_largest_first(judge: ArcFaceJudge) -> None:
    faces = judge.detect(face_photo(faces=((56, 56, 24), (168, 168, 64))))
    assert [face.box.side for face in faces] == pytest.approx([128, 48], abs=1)
    big = faces[0]
    assert (big.box.left, big.box.top) == pytest.approx((104, 104), abs=1)
    assert big.confident and big.score > 0.99
    # SCRFD's five points: eyes, nose, mouth corners, placed by the tiny detector at known offsets.
    expected = np.array([168.0, 168.0]) + KEYPOINTS * 64
    assert np.allclose(np.array(big.landmarks.points), expected, atol=1)
    assert big.landmarks.left_eye == pytest.approx(tuple(expected[0]), abs=1)
    assert big.landmarks.yaw() == pytest.approx(0.0, abs=0.01)


def test_embeddings_are_the_local_engines_arcface_vectors(judge: ArcFaceJudge, model_dir: Path) -> None:
    photo = face_photo(faces=((128, 120, 48),))
    embedding = judge.embed(photo, judge.detect(photo)[0])
    assert embedding.judge == "arcface-antelopev2"
    assert embedding.vector.shape == (512,) and embedding.vector.dtype == np.float32
    analyzer = InsightFaceAnalyzer(model_dir, device="cpu", det_size=256, min_face_px=24)
    assert np.allclose(embedding.vector, analyzer.analyze(photo).embedding, atol=1e-5)


def test_cosine_distance(judge: ArcFaceJudge) -> None:
    a = np.array([1.0, 0.0], dtype=np.float32)
    assert judge.distance(a, 3 * a) == pytest.approx(0.0)
    assert judge.distance(a, np.array([0.0, 2.0])) == pytest.approx(1.0)
    assert judge.distance(a, -a) == pytest.approx(2.0)
    assert judge.distance(a, np.zeros(2)) == 1.0


def test_the_gate_and_the_score_run_on_the_arcface_judge(judge: ArcFaceJudge) -> None:
    settings = JudgeSettings()
    photo = face_photo(faces=((128, 120, 48),), seed=1)
    enrollment = enroll(judge, [photo, photo], settings)
    assert isinstance(enrollment, Enrollment) and enrollment.pair_scores == pytest.approx((1.0,))
    group = enroll(judge, [face_photo(faces=((64, 64, 40), (184, 184, 40)))], settings)
    assert isinstance(group, Refusal) and group.reason == RefusalReason.SEVERAL_FACES
    same = score_output(judge, photo, enrollment.embeddings)
    other = score_output(judge, face_photo(faces=((128, 120, 48),), tone=(120, 90, 160), seed=2), enrollment.embeddings)
    assert same.likeness is not None and same.likeness.score == pytest.approx(1.0)
    assert other.likeness is not None and other.likeness.score < same.likeness.score
    assert not score_output(judge, np.zeros((256, 256, 3), dtype=np.uint8), enrollment.embeddings).passes(0.0)


def test_open_judge_picks_the_model_the_settings_name(model_dir: Path) -> None:
    assert open_judge(JudgeSettings()).name == "dlib-resnet-v1"
    arcface = open_judge(JudgeSettings(model="arcface"), arcface_dir=model_dir)
    assert isinstance(arcface, ArcFaceJudge)
    with pytest.raises(JudgeUnavailableError, match="antelopev2"):
        open_judge(JudgeSettings(model="arcface"))
