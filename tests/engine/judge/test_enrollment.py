"""The enrollment gate on real photos and transformed copies, and its rules on hand-made faces."""

from __future__ import annotations

import numpy as np
import pytest

from engine.judge import (
    Box,
    CheckedPhoto,
    DlibJudge,
    Embedding,
    Enrollment,
    Face,
    JudgeSettings,
    Landmarks,
    Refusal,
    RefusalReason,
    check_identity,
    check_photo,
    dominant_face,
    enroll,
)
from tests.engine.judge import photos


def refused(result: Enrollment | Refusal, reason: RefusalReason) -> Refusal:
    assert isinstance(result, Refusal), result
    assert result.reason == reason, result
    return result


def accepted(result: Enrollment | Refusal) -> Enrollment:
    assert isinstance(result, Enrollment), result
    return result


def test_tom_hanks_is_accepted_with_his_measures(judge: DlibJudge, settings: JudgeSettings) -> None:
    enrollment = accepted(enroll(judge, [photos.tom()], settings))
    assert enrollment.judge == "dlib-resnet-v1" and enrollment.pair_scores == ()
    [photo] = enrollment.photos
    assert photo.measures.faces == 1
    assert photo.measures.side == pytest.approx(91, abs=3)  # the 112-px crop is mostly face
    assert 90 < photo.measures.luminance < 140
    assert photo.measures.sharpness > 4 * settings.min_sharpness
    assert abs(photo.measures.yaw) < settings.max_yaw
    assert photo.embedding.judge == "dlib-resnet-v1" and photo.embedding.vector.shape == (128,)


def test_the_astronaut_is_accepted_despite_a_face_like_patch_on_her_suit(
    judge: DlibJudge, settings: JudgeSettings
) -> None:
    enrollment = accepted(enroll(judge, [photos.astronaut()], settings))
    [photo] = enrollment.photos
    # HOG also finds a weak "face" on the suit; it is not confident, so it does not compete.
    assert photo.measures.faces == 2
    assert photo.face.box.top < 100 and photo.face.confident


def test_the_group_photo_is_refused_as_several_faces(judge: DlibJudge, settings: JudgeSettings) -> None:
    refusal = refused(enroll(judge, [photos.group()], settings), RefusalReason.SEVERAL_FACES)
    assert refusal.faces >= 5
    assert refusal.measured is not None and refusal.measured >= 4  # faces of comparable size
    assert refusal.limit == settings.dominant_face_ratio
    assert refusal.photo == 1


def test_one_face_cut_from_the_group_photo_is_accepted(judge: DlibJudge, settings: JudgeSettings) -> None:
    ross = np.ascontiguousarray(photos.group()[230:480, 390:640])
    accepted(enroll(judge, [ross], settings))


def test_a_blurred_copy_is_refused_as_blurred(judge: DlibJudge, settings: JudgeSettings) -> None:
    for image in (photos.blurred(photos.tom(), 1.5), photos.blurred(photos.astronaut(), 3)):
        refusal = refused(enroll(judge, [image], settings), RefusalReason.TOO_BLURRED)
        assert refusal.measured is not None and refusal.measured < settings.min_sharpness
        assert refusal.limit == settings.min_sharpness and refusal.faces >= 1


def test_a_darkened_copy_is_refused_as_dark_and_a_dimmer_one_is_not(judge: DlibJudge, settings: JudgeSettings) -> None:
    refusal = refused(enroll(judge, [photos.darkened(photos.tom(), 0.25)], settings), RefusalReason.TOO_DARK)
    assert refusal.measured == pytest.approx(28, abs=4) and refusal.limit == 40
    refused(enroll(judge, [photos.darkened(photos.astronaut(), 0.2)], settings), RefusalReason.TOO_DARK)
    accepted(enroll(judge, [photos.darkened(photos.tom(), 0.5)], settings))


def test_a_black_photo_is_too_dark_and_a_blank_one_has_no_face(judge: DlibJudge, settings: JudgeSettings) -> None:
    refusal = refused(enroll(judge, [np.zeros((200, 200, 3), dtype=np.uint8)], settings), RefusalReason.TOO_DARK)
    assert refusal.measured == 0 and refusal.faces == 0
    refused(enroll(judge, [np.full((200, 200, 3), 128, dtype=np.uint8)], settings), RefusalReason.NO_FACE)


def test_a_face_too_small_for_the_backend_reports_its_size(judge: DlibJudge, settings: JudgeSettings) -> None:
    refusal = refused(enroll(judge, [photos.tom()], settings, min_face_px=128), RefusalReason.FACE_TOO_SMALL)
    assert refusal.measured == pytest.approx(91, abs=3) and refusal.limit == 128
    small = JudgeSettings(min_face_px=100)
    refusal = refused(enroll(judge, [photos.tom()], small), RefusalReason.FACE_TOO_SMALL)
    assert refusal.limit == 100
    # The backend's minimum only ever raises the setting's.
    accepted(enroll(judge, [photos.tom()], settings, min_face_px=32))


def test_a_face_turned_aside_is_refused_as_not_frontal(judge: DlibJudge, settings: JudgeSettings) -> None:
    monica = np.ascontiguousarray(photos.group()[120:330, 200:420])
    refusal = refused(enroll(judge, [monica], settings), RefusalReason.NOT_FRONTAL)
    assert refusal.measured is not None and abs(refusal.measured) > settings.max_yaw


def test_flipped_rotated_and_cropped_copies_are_accepted(judge: DlibJudge, settings: JudgeSettings) -> None:
    for image in (
        photos.flipped(photos.tom()),
        photos.rotated(photos.tom(), 10),
        photos.rotated(photos.astronaut(), -15),
        photos.cropped(photos.astronaut(), 0.2, 0.0, 0.8, 0.6),
        photos.scaled(photos.astronaut(), 2),
    ):
        accepted(enroll(judge, [image], settings))


def test_a_photo_of_a_screen_is_refused(judge: DlibJudge, settings: JudgeSettings) -> None:
    refusal = refused(enroll(judge, [photos.on_screen(photos.astronaut())], settings), RefusalReason.SCREEN_PHOTO)
    assert refusal.measured is not None and refusal.measured > settings.max_screen_pattern


def test_a_grid_of_faces_is_refused_as_a_screen_of_faces(judge: DlibJudge, settings: JudgeSettings) -> None:
    gallery = photos.tiled([photos.tom(), photos.flipped(photos.tom())] * 2, columns=2)
    refusal = refused(enroll(judge, [gallery], settings), RefusalReason.SCREEN_OF_FACES)
    assert refusal.measured == 4


def test_several_photos_of_one_person_are_accepted_with_their_pair_scores(
    judge: DlibJudge, settings: JudgeSettings
) -> None:
    images = [photos.tom(), photos.flipped(photos.tom()), photos.rotated(photos.tom(), 10)]
    enrollment = accepted(enroll(judge, images, settings))
    assert len(enrollment.embeddings) == 3
    assert len(enrollment.pair_scores) == 3
    assert min(enrollment.pair_scores) > 0.7


def test_the_odd_photo_out_is_named(judge: DlibJudge, settings: JudgeSettings) -> None:
    images = [photos.tom(), photos.flipped(photos.tom()), photos.astronaut(), photos.rotated(photos.tom(), -10)]
    refusal = refused(enroll(judge, images, settings), RefusalReason.DIFFERENT_PEOPLE)
    assert refusal.photo == 3
    assert refusal.measured is not None and refusal.measured < 0.45 and refusal.limit == settings.same_person_score
    # Of two photos that disagree, the second is named: the first is the primary.
    pair = enroll(judge, [photos.astronaut(), photos.tom()], settings)
    assert refused(pair, RefusalReason.DIFFERENT_PEOPLE).photo == 2


def test_a_photo_refused_among_several_is_named(judge: DlibJudge, settings: JudgeSettings) -> None:
    images = [photos.tom(), photos.group()]
    refusal = refused(enroll(judge, images, settings), RefusalReason.SEVERAL_FACES)
    assert refusal.photo == 2


def test_too_many_photos_and_none(judge: DlibJudge, settings: JudgeSettings) -> None:
    refusal = refused(enroll(judge, [photos.tom()] * 5, settings), RefusalReason.TOO_MANY_PHOTOS)
    assert (refusal.measured, refusal.limit) == (5, 4)
    refused(enroll(judge, [], settings), RefusalReason.NO_FACE)


# Rules on hand-made faces: no detector involved.

FRONTAL = Landmarks(left_eye=(0, 0), right_eye=(1, 0), nose=(0.5, 0.5), points=((0, 0),) * 5)


def face(side: float, *, confident: bool = True, left: float = 0) -> Face:
    return Face(box=Box(left, 0, left + side, side), landmarks=FRONTAL, score=1.0, confident=confident)


def test_a_face_dominates_when_it_is_clearly_wider_than_every_confident_other() -> None:
    big, near, far = face(160), face(110, left=300), face(90, left=600)
    assert dominant_face([big, far], 1.6) == (big, 0)
    assert dominant_face([big, near, far], 1.6) == (None, 2)
    assert dominant_face([big, near, far], 1.4) == (big, 0)
    # Unconfident detections never compete, and never win over a confident face.
    ghost = face(300, confident=False, left=900)
    assert dominant_face([ghost, big], 1.6) == (big, 0)
    assert dominant_face([ghost], 1.6) == (ghost, 0)
    assert dominant_face([], 1.6) == (None, 0)


def test_check_photo_is_a_pure_function_of_the_image_and_the_faces(settings: JudgeSettings) -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(60, 200, size=(300, 300, 3), dtype=np.uint8)
    checked = check_photo(image, [face(120, left=90)], settings)
    assert isinstance(checked, CheckedPhoto)
    assert checked.measures.side == 120 and checked.measures.faces == 1
    turned = Face(
        box=Box(90, 0, 210, 120),
        landmarks=Landmarks(left_eye=(100, 40), right_eye=(160, 40), nose=(155, 80), points=((0, 0),) * 5),
        score=1.0,
        confident=True,
    )
    refusal = check_photo(image, [turned], settings, photo=2)
    assert isinstance(refusal, Refusal) and refusal.reason == RefusalReason.NOT_FRONTAL and refusal.photo == 2
    assert refusal.measured == pytest.approx(25 / 60)


class VectorJudge:
    """Compares hand-made vectors by Euclidean distance, with a match distance of 1."""

    name = "vectors"
    match_distance = 1.0

    def detect(self, image: np.ndarray) -> list[Face]:
        raise AssertionError("not used")

    def embed(self, image: np.ndarray, face: Face) -> Embedding:
        raise AssertionError("not used")

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        return float(np.linalg.norm(a - b))


def vectors(*points: float) -> list[Embedding]:
    return [Embedding("vectors", np.array([p], dtype=np.float32)) for p in points]


def test_identity_check_names_the_one_photo_that_disagrees() -> None:
    judge, settings = VectorJudge(), JudgeSettings()
    assert check_identity(judge, vectors(0.0), settings) is None
    assert check_identity(judge, vectors(0.0, 0.5, 0.9), settings) is None
    refusal = check_identity(judge, vectors(0.0, 0.2, 3.0, 0.1), settings)
    assert refusal is not None and refusal.photo == 3
    assert refusal.measured == 0.0  # the farthest pair, 3 apart, scores 0
    # Two pairs of people: no single photo is to blame.
    refusal = check_identity(judge, vectors(0.0, 0.1, 5.0, 5.1), settings)
    assert refusal is not None and refusal.reason == RefusalReason.DIFFERENT_PEOPLE and refusal.photo is None
