"""The dlib judge: packaged model files, the detection scale policy, input checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.judge import DlibJudge, JudgeSettings, JudgeUnavailableError, Refusal, RefusalReason, enroll
from engine.judge.dlib_judge import RECOGNIZER_FILE, SHAPE_FILE, packaged_models_dir
from tests.engine.judge import photos


def test_models_come_from_the_package_and_only_the_five_point_landmarks_are_used() -> None:
    directory = packaged_models_dir()
    assert (directory / SHAPE_FILE).is_file() and (directory / RECOGNIZER_FILE).is_file()
    assert SHAPE_FILE == "shape_predictor_5_face_landmarks.dat"


def test_missing_model_files_say_which(tmp_path: Path) -> None:
    with pytest.raises(JudgeUnavailableError, match=SHAPE_FILE):
        DlibJudge(models_dir=tmp_path)


def test_landmarks_are_eye_centres_and_the_nose_base(judge: DlibJudge) -> None:
    [face] = judge.detect(photos.tom())
    marks = face.landmarks
    assert len(marks.points) == 5
    assert marks.left_eye[0] < marks.nose[0] < marks.right_eye[0]
    assert marks.nose[1] > max(marks.left_eye[1], marks.right_eye[1])
    assert 30 < marks.eye_distance < 45  # eyes of a 91-px face
    assert abs(marks.roll_degrees()) < 5


def test_a_large_image_is_searched_at_a_bounded_size_and_boxes_come_back_in_its_pixels(judge: DlibJudge) -> None:
    small = judge.detect(photos.astronaut())[0].box
    large = judge.detect(photos.scaled(photos.astronaut(), 3))[0].box  # 1536 px, searched at 1280
    assert large.left == pytest.approx(3 * small.left, rel=0.1)
    assert large.side == pytest.approx(3 * small.side, rel=0.15)


def test_small_faces_are_found_by_searching_enlarged(judge: DlibJudge, settings: JudgeSettings) -> None:
    # A face of about 55 px is below HOG's 80-px window. A small image is searched at twice its size at
    # once; a large one is searched again enlarged when nothing was found at its own size.
    thumbnail = photos.scaled(photos.tom(), 0.6)
    [face] = judge.detect(thumbnail)
    assert 45 < face.box.side < 65
    canvas = np.full((900, 1200, 3), 110, dtype=np.uint8)
    canvas[300 : 300 + thumbnail.shape[0], 500 : 500 + thumbnail.shape[1]] = thumbnail
    [found] = judge.detect(canvas)
    assert found.box.left == pytest.approx(500 + face.box.left, abs=8)
    refusal = enroll(judge, [canvas], settings)
    assert isinstance(refusal, Refusal) and refusal.reason == RefusalReason.FACE_TOO_SMALL
    assert refusal.measured == found.box.side and refusal.limit == settings.min_face_px


def test_embeddings_are_deterministic_128_d_vectors(judge: DlibJudge) -> None:
    image = photos.tom()
    face = judge.detect(image)[0]
    a, b = judge.embed(image, face), judge.embed(image, face)
    assert a.vector.shape == (128,) and np.array_equal(a.vector, b.vector)
    assert judge.distance(a.vector, b.vector) == 0.0


def test_only_rgb_uint8_images_are_accepted(judge: DlibJudge) -> None:
    with pytest.raises(ValueError, match="RGB uint8"):
        judge.detect(np.zeros((64, 64), dtype=np.uint8))
    with pytest.raises(ValueError, match="RGB uint8"):
        judge.detect(np.zeros((64, 64, 3), dtype=np.float32))
