"""Likeness of outputs to an identity on real photos: the same face after edits, someone else, no face."""

from __future__ import annotations

import numpy as np
import pytest

from engine.judge import DlibJudge, Embedding, JudgeMismatchError, JudgeSettings, OutputScore, better, score_output
from engine.judge.face import Likeness
from tests.engine.judge import photos


def test_flipped_rotated_and_cropped_copies_score_as_the_same_person(
    judge: DlibJudge, settings: JudgeSettings, tom_identity: tuple[Embedding, ...]
) -> None:
    for image in (
        photos.flipped(photos.tom()),
        photos.rotated(photos.tom(), 10),
        photos.rotated(photos.tom(), -15),
        photos.cropped(photos.tom(), 0.05, 0.05, 0.95, 1.0),
        photos.scaled(photos.tom(), 4),
    ):
        result = score_output(judge, image, tom_identity)
        assert result.passes(settings.min_score), result
        assert result.likeness is not None and result.likeness.score > 0.75
        assert result.likeness.distance < 0.3 and result.judge == "dlib-resnet-v1"


def test_the_astronaut_scores_as_someone_else(
    judge: DlibJudge, settings: JudgeSettings, tom_identity: tuple[Embedding, ...]
) -> None:
    result = score_output(judge, photos.astronaut(), tom_identity)
    assert result.likeness is not None
    assert result.likeness.score < 0.45 and not result.passes(settings.min_score)
    # Her real face was scored, not the face-like patch on her suit.
    assert result.face is not None and result.face.confident and result.face.box.top < 100
    assert result.faces == 2


def test_an_output_without_a_face_has_no_likeness_and_fails(
    judge: DlibJudge, settings: JudgeSettings, tom_identity: tuple[Embedding, ...]
) -> None:
    result = score_output(judge, np.full((256, 256, 3), 100, dtype=np.uint8), tom_identity)
    assert result == OutputScore(judge="dlib-resnet-v1", likeness=None, face=None, faces=0)
    assert result.score == 0.0 and not result.passes(0.0)


def test_the_best_matching_face_of_a_crowd_counts(judge: DlibJudge) -> None:
    group = photos.group()
    ross = np.ascontiguousarray(group[230:480, 390:640])
    identity = [judge.embed(ross, judge.detect(ross)[0])]
    result = score_output(judge, group, identity)
    assert result.faces >= 5
    assert result.likeness is not None and result.likeness.score > 0.9
    assert result.face is not None and 430 < result.face.box.centre[0] < 600


def test_an_identity_of_several_photos_is_matched_by_its_closest_photo(
    judge: DlibJudge, tom_identity: tuple[Embedding, ...]
) -> None:
    astronaut = photos.astronaut()
    her = judge.embed(astronaut, judge.detect(astronaut)[0])
    alone = score_output(judge, photos.flipped(astronaut), [her])
    both = score_output(judge, photos.flipped(astronaut), [*tom_identity, her])
    assert both.likeness == alone.likeness


def test_an_identity_from_another_judge_is_refused(judge: DlibJudge) -> None:
    foreign = Embedding("arcface-antelopev2", np.ones(512, dtype=np.float32))
    with pytest.raises(JudgeMismatchError, match="arcface-antelopev2"):
        score_output(judge, photos.tom(), [foreign])
    with pytest.raises(ValueError, match="at least one"):
        score_output(judge, photos.tom(), [])


def test_better_keeps_the_higher_score_and_the_first_on_a_tie() -> None:
    def scored(score: float | None) -> OutputScore:
        likeness = None if score is None else Likeness("j", 1 - score, score)
        return OutputScore(judge="j", likeness=likeness, face=None, faces=0 if score is None else 1)

    first, second = scored(0.4), scored(0.7)
    assert better(first, second) is second
    assert better(second, first) is second
    tie = scored(0.4)
    assert better(first, tie) is first
    assert better(scored(None), first) is first
