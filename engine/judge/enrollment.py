"""The enrollment gate: is this photo (or set of photos) one usable face of one person?"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from engine.judge import quality
from engine.judge.face import Embedding, Face, FaceJudge, compare
from engine.judge.settings import JudgeSettings


class RefusalReason(StrEnum):
    NO_FACE = "no_face"
    SEVERAL_FACES = "several_faces"  # no face clearly larger than the others
    SCREEN_OF_FACES = "screen_of_faces"  # faces tiled on a grid: a gallery, a video call
    SCREEN_PHOTO = "screen_photo"  # a screen's pixel grid or moiré shows through
    FACE_TOO_SMALL = "face_too_small"
    TOO_DARK = "too_dark"
    TOO_BLURRED = "too_blurred"
    NOT_FRONTAL = "not_frontal"
    TOO_MANY_PHOTOS = "too_many_photos"
    DIFFERENT_PEOPLE = "different_people"


@dataclass(frozen=True)
class Refusal:
    """Why a photo or an identity was refused, with what was measured, for a specific message.

    ``measured`` and ``limit`` by reason: face_too_small: the face's shorter side and the minimum, in
    pixels; too_dark: mean luma (0-255) and the minimum; too_blurred: sharpness and the minimum;
    not_frontal: the yaw (nose offset in eye distances) and the maximum; screen_photo: the pattern
    strength and the maximum; several_faces: how many faces compete and the width ratio the largest face
    would need over the others; screen_of_faces: how many faces are tiled; too_many_photos: the count and the
    maximum; different_people: the lowest likeness between two photos and the minimum. ``photo`` is the
    1-based position of the photo concerned (for different_people, the odd one out, or None when no single
    photo is to blame).
    """

    reason: RefusalReason
    measured: float | None = None
    limit: float | None = None
    photo: int | None = None
    faces: int = 0  # faces found in that photo


@dataclass(frozen=True)
class PhotoMeasures:
    """What the checks measured on a photo's dominant face."""

    faces: int  # every face the judge found, the dominant one included
    side: float  # shorter side of the face box, pixels
    luminance: float
    sharpness: float
    yaw: float
    screen_pattern: float


@dataclass(frozen=True)
class CheckedPhoto:
    """A photo that passed every check: the face to use and what was measured."""

    face: Face
    measures: PhotoMeasures


@dataclass(frozen=True)
class EnrolledPhoto:
    face: Face
    measures: PhotoMeasures
    embedding: Embedding


@dataclass(frozen=True)
class Enrollment:
    """An accepted identity: one embedding per photo, in the order given (the first is the primary)."""

    judge: str
    photos: tuple[EnrolledPhoto, ...]
    pair_scores: tuple[float, ...]  # likeness of each pair of photos, (1,2), (1,3), ... (empty for one)

    @property
    def embeddings(self) -> tuple[Embedding, ...]:
        return tuple(photo.embedding for photo in self.photos)


def dominant_face(faces: Sequence[Face], ratio: float) -> tuple[Face | None, int]:
    """The face that clearly dominates, and how many confident faces compete with it when none does.

    The dominant face is the largest confident face (the largest of all when none is confident). Another
    confident face competes unless the dominant one is ``ratio`` times wider. Unconfident detections never
    compete: on a CPU detector they are mostly face-like texture (a patch, a helmet).
    """
    if not faces:
        return None, 0
    confident = [face for face in faces if face.confident]
    first = max(confident or faces, key=lambda face: face.box.area)
    rivals = [face for face in confident if face is not first and first.box.side < ratio * face.box.side]
    if rivals:
        return None, 1 + len(rivals)
    return first, 0


def check_photo(
    image: np.ndarray,
    faces: Sequence[Face],
    settings: JudgeSettings,
    *,
    min_face_px: int | None = None,
    photo: int | None = None,
) -> CheckedPhoto | Refusal:
    """Every single-photo check over an RGB image and the faces a judge found in it.

    ``min_face_px`` is the backend's own minimum when it has one larger than the setting. Checks run from
    the most fundamental (is there one face) to the most particular (is it frontal), so a photo gets the
    reason that matters most.
    """
    plane = quality.grey(image)
    count = len(faces)
    if not faces:
        whole = quality.luminance(plane)
        if whole < settings.min_luminance:
            return Refusal(RefusalReason.TOO_DARK, whole, settings.min_luminance, photo)
        return Refusal(RefusalReason.NO_FACE, photo=photo)
    if quality.face_grid(list(faces)):
        return Refusal(RefusalReason.SCREEN_OF_FACES, count, None, photo, count)
    face, competing = dominant_face(faces, settings.dominant_face_ratio)
    if face is None:
        return Refusal(RefusalReason.SEVERAL_FACES, competing, settings.dominant_face_ratio, photo, count)
    needed = max(settings.min_face_px, min_face_px or 0)
    side = face.box.side
    if side < needed:
        return Refusal(RefusalReason.FACE_TOO_SMALL, side, needed, photo, count)
    region = quality.crop(plane, face.box)
    measures = PhotoMeasures(
        faces=count,
        side=side,
        luminance=quality.luminance(region),
        sharpness=quality.sharpness(region),
        yaw=face.landmarks.yaw(),
        screen_pattern=quality.screen_pattern(plane),
    )
    if measures.luminance < settings.min_luminance:
        return Refusal(RefusalReason.TOO_DARK, measures.luminance, settings.min_luminance, photo, count)
    if measures.sharpness < settings.min_sharpness:
        return Refusal(RefusalReason.TOO_BLURRED, measures.sharpness, settings.min_sharpness, photo, count)
    if measures.screen_pattern > settings.max_screen_pattern:
        return Refusal(RefusalReason.SCREEN_PHOTO, measures.screen_pattern, settings.max_screen_pattern, photo, count)
    if abs(measures.yaw) > settings.max_yaw:
        return Refusal(RefusalReason.NOT_FRONTAL, measures.yaw, settings.max_yaw, photo, count)
    return CheckedPhoto(face=face, measures=measures)


def check_identity(judge: FaceJudge, embeddings: Sequence[Embedding], settings: JudgeSettings) -> Refusal | None:
    """Whether several photos show one person; names the odd one out when exactly one photo disagrees.

    With two photos that disagree the second is named (the first is the primary). With more, the photo
    whose removal leaves the others agreeing, and that looks least like them, is named; when no single
    removal helps, the photos show several people and none is named.
    """
    count = len(embeddings)
    if count < 2:
        return None
    scores = {
        (i, j): compare(judge, embeddings[i], embeddings[j]).score for i, j in itertools.combinations(range(count), 2)
    }
    lowest = min(scores.values())
    if lowest >= settings.same_person_score:
        return None

    def agree(members: list[int]) -> bool:
        return all(scores[pair] >= settings.same_person_score for pair in itertools.combinations(members, 2))

    def mean_to_others(index: int) -> float:
        return float(np.mean([score for pair, score in scores.items() if index in pair]))

    if count == 2:
        odd: int | None = 1
    else:
        candidates = [i for i in range(count) if agree([j for j in range(count) if j != i])]
        odd = min(candidates, key=mean_to_others) if candidates else None
    return Refusal(
        RefusalReason.DIFFERENT_PEOPLE,
        lowest,
        settings.same_person_score,
        None if odd is None else odd + 1,
    )


def enroll(
    judge: FaceJudge,
    images: Sequence[np.ndarray],
    settings: JudgeSettings,
    *,
    min_face_px: int | None = None,
) -> Enrollment | Refusal:
    """Check one to ``max_photos`` photos of one person and embed them; the first refusal wins.

    Nothing is kept anywhere: the caller stores the photos and embeddings of an accepted identity.
    """
    if len(images) > settings.max_photos:
        return Refusal(RefusalReason.TOO_MANY_PHOTOS, len(images), settings.max_photos)
    if not images:
        return Refusal(RefusalReason.NO_FACE)
    enrolled = []
    for position, image in enumerate(images, start=1):
        checked = check_photo(image, judge.detect(image), settings, min_face_px=min_face_px, photo=position)
        if isinstance(checked, Refusal):
            return checked
        embedding = judge.embed(image, checked.face)
        enrolled.append(EnrolledPhoto(face=checked.face, measures=checked.measures, embedding=embedding))
    embeddings = [photo.embedding for photo in enrolled]
    refusal = check_identity(judge, embeddings, settings)
    if refusal is not None:
        return refusal
    pair_scores = tuple(compare(judge, a, b).score for a, b in itertools.combinations(embeddings, 2))
    return Enrollment(judge=judge.name, photos=tuple(enrolled), pair_scores=pair_scores)
