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


def unmarked_photo(faces: tuple[tuple[int, int, int], ...], seed: int = 0) -> np.ndarray:
    """A photo whose faces the tiny SCRFD cannot see: their detector markers painted over."""
    image = face_photo(faces=faces, seed=seed)
    for cx, cy, _ in faces:
        image[cy : cy + 8, cx : cx + 8] = (200, 170, 150)
    return image


class ScriptedDetector:
    """Stands in for facexlib's RetinaFace: reports the given faces (centre, half-size) with landmarks."""

    def __init__(self, faces: tuple[tuple[int, int, int], ...]) -> None:
        self.faces = faces
        self.calls = 0

    def detect(self, image: np.ndarray) -> list[tuple[tuple[float, float, float, float], np.ndarray]]:
        self.calls += 1
        return [
            ((cx - half, cy - half, cx + half, cy + half), np.array([cx, cy]) + KEYPOINTS * half)
            for cx, cy, half in self.faces
        ]


@pytest.fixture(scope="module")
def antelope_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_antelope_dir(tmp_path_factory.mktemp("antelopev2-fallback"))


def with_fallback(model_dir: Path, detector: ScriptedDetector) -> InsightFaceAnalyzer:
    return InsightFaceAnalyzer(model_dir, device="cpu", det_size=256, min_face_px=24, fallback=detector)


def test_no_insightface_face_falls_back_to_arcface_on_the_aligned_crop(antelope_dir: Path) -> None:
    faces = ((72, 72, 30), (168, 160, 56))
    photo = unmarked_photo(faces)
    detector = ScriptedDetector(faces)
    analyzer = with_fallback(antelope_dir, detector)
    face = analyzer.analyze(photo)
    assert detector.calls == 1
    # The larger face, aligned on the fallback's landmarks.
    assert face.box == (112, 104, 224, 216)
    assert np.array_equal(face.aligned, align_face(photo, np.array([168, 160]) + KEYPOINTS * 56))
    assert face.embedding.shape == (512,) and face.embedding.dtype == np.float32
    assert float(np.linalg.norm(face.embedding)) > 1  # raw, as ArcFace gives it
    # The embedding is read from the aligned crop: another person's crop gives another embedding.
    other = with_fallback(antelope_dir, ScriptedDetector(((168, 160, 56),))).analyze(unmarked_photo(faces, seed=5))
    assert np.abs(other.embedding - face.embedding).max() > 0.1


def test_fallback_is_not_asked_when_insightface_finds_a_face_and_keeps_the_floor(antelope_dir: Path) -> None:
    detector = ScriptedDetector(((128, 128, 48),))
    analyzer = with_fallback(antelope_dir, detector)
    analyzer.analyze(face_photo())
    assert detector.calls == 0
    with pytest.raises(NoFaceError, match="no face"):
        with_fallback(antelope_dir, ScriptedDetector(())).analyze(unmarked_photo(((128, 128, 48),)))
    with pytest.raises(NoFaceError, match="below the 24px minimum"):
        with_fallback(antelope_dir, ScriptedDetector(((128, 128, 8),))).analyze(unmarked_photo(((128, 128, 8),)))
