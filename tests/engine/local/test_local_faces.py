"""insightface on CPU with tiny antelopev2-shaped ONNX models: largest face, raw embedding, alignment."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.errors import NoFaceError
from engine.local.faces import (
    BACKGROUND_LABELS,
    FFHQ_TEMPLATE_512,
    InsightFaceAnalyzer,
    align_face,
    whiten_background,
)
from tests.engine.local.face_models import KEYPOINTS, face_photo, write_antelope_dir


@pytest.fixture(scope="module")
def analyzer(tmp_path_factory: pytest.TempPathFactory) -> InsightFaceAnalyzer:
    model_dir = write_antelope_dir(tmp_path_factory.mktemp("antelopev2"))
    return InsightFaceAnalyzer(model_dir, device="cpu", det_size=256, min_face_px=24)


def test_finds_the_face_with_raw_embedding_and_aligned_crop(analyzer: InsightFaceAnalyzer) -> None:
    face = analyzer.analyze(face_photo(faces=((128, 120, 48),)))
    assert face.box == pytest.approx((80, 72, 176, 168), abs=1)
    assert face.embedding.shape == (512,) and face.embedding.dtype == np.float32
    assert 5 < float(np.linalg.norm(face.embedding)) < 100  # raw, not unit-normalised
    assert face.aligned.shape == (512, 512, 3) and face.aligned.dtype == np.uint8


def test_largest_of_several_faces_wins(analyzer: InsightFaceAnalyzer) -> None:
    photo = face_photo(faces=((56, 56, 24), (168, 168, 64)))
    face = analyzer.analyze(photo)
    assert face.box == pytest.approx((104, 104, 232, 232), abs=1)
    alone = analyzer.analyze(face_photo(faces=((56, 56, 24),)))
    assert alone.box == pytest.approx((32, 32, 80, 80), abs=1)


def test_different_faces_give_different_embeddings(analyzer: InsightFaceAnalyzer) -> None:
    a = analyzer.analyze(face_photo(tone=(200, 170, 150), seed=1)).embedding
    b = analyzer.analyze(face_photo(tone=(120, 90, 160), seed=2)).embedding
    a2 = analyzer.analyze(face_photo(tone=(200, 170, 150), seed=1)).embedding
    assert np.array_equal(a, a2)
    assert np.abs(a - b).max() > 0.1


def test_no_face_and_too_small_face_raise_no_face(analyzer: InsightFaceAnalyzer) -> None:
    with pytest.raises(NoFaceError, match="no face"):
        analyzer.analyze(np.zeros((256, 256, 3), dtype=np.uint8))
    with pytest.raises(NoFaceError, match="below the 24px minimum"):
        analyzer.analyze(face_photo(faces=((128, 128, 8),)))


def test_alignment_puts_landmarks_on_the_template() -> None:
    half = 60.0
    centre = np.array([150.0, 140.0])
    landmarks = centre + KEYPOINTS * half
    image = np.zeros((300, 300, 3), dtype=np.uint8)
    for x, y in landmarks.astype(int):
        image[y - 2 : y + 3, x - 2 : x + 3] = 255
    aligned = align_face(image, landmarks)
    # Each landmark's dot lands near the template after the similarity fit (5 points, 4 dof).
    for x, y in FFHQ_TEMPLATE_512:
        window = aligned[int(y) - 20 : int(y) + 21, int(x) - 20 : int(x) + 21]
        assert window.max() > 100
    with pytest.raises(NoFaceError):
        align_face(image, np.zeros((5, 2)))


def test_whitening_keeps_face_grey_and_whitens_background_classes() -> None:
    aligned = np.zeros((4, 4, 3), dtype=np.uint8)
    aligned[..., 0] = 255  # pure red face: grey level 0.299
    labels = np.array([[1, 17, 0, 18], [7, 8, 9, 14], [15, 16, 2, 13], [10, 11, 12, 4]])
    out = whiten_background(aligned, labels)
    assert out.shape == (4, 4, 3) and out.dtype == np.float32
    background = np.isin(labels, BACKGROUND_LABELS)
    assert np.all(out[background] == 1.0)
    assert np.allclose(out[~background], 0.299)
    assert set(BACKGROUND_LABELS) == {0, 7, 8, 9, 14, 15, 16, 18}


def test_antelope_dir_has_the_real_file_names(tmp_path: Path) -> None:
    write_antelope_dir(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["glintr100.onnx", "scrfd_10g_bnkps.onnx"]
