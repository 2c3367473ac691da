"""The face judge: enrollment checks on face photos and a likeness score for every rendered image."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from engine.judge.dlib_judge import DlibJudge, JudgeUnavailableError
from engine.judge.enrollment import (
    CheckedPhoto,
    EnrolledPhoto,
    Enrollment,
    PhotoMeasures,
    Refusal,
    RefusalReason,
    check_identity,
    check_photo,
    dominant_face,
    enroll,
)
from engine.judge.face import (
    Box,
    Embedding,
    Face,
    FaceJudge,
    JudgeMismatchError,
    Landmarks,
    Likeness,
    compare,
    score_from_distance,
)
from engine.judge.likeness import OutputScore, better, score_output
from engine.judge.settings import JudgeSettings


def open_judge(
    settings: JudgeSettings, *, arcface_dir: Path | None = None, device: Literal["cpu", "cuda"] = "cpu"
) -> FaceJudge:
    """The judge the settings name. ``arcface_dir`` is the local engine's antelopev2 directory."""
    if settings.model == "arcface":
        if arcface_dir is None:
            raise JudgeUnavailableError("the arcface judge needs the local engine's antelopev2 directory")
        from engine.judge.arcface import ArcFaceJudge

        return ArcFaceJudge.from_model_dir(arcface_dir, device=device)
    return DlibJudge()


__all__ = [
    "Box",
    "CheckedPhoto",
    "DlibJudge",
    "Embedding",
    "EnrolledPhoto",
    "Enrollment",
    "Face",
    "FaceJudge",
    "JudgeMismatchError",
    "JudgeSettings",
    "JudgeUnavailableError",
    "Landmarks",
    "Likeness",
    "OutputScore",
    "PhotoMeasures",
    "Refusal",
    "RefusalReason",
    "better",
    "check_identity",
    "check_photo",
    "compare",
    "dominant_face",
    "enroll",
    "open_judge",
    "score_from_distance",
    "score_output",
]
