"""Settings of the face judge (composed into the application settings as ``LIKENESS_JUDGE__*``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

JudgeModel = Literal["dlib", "arcface"]


class JudgeSettings(BaseModel):
    """Thresholds of the enrollment checks and of the likeness retry.

    Scores are the judge's calibrated likeness in [0, 1] (0.5 is the recognizer's own same-person
    threshold), so they mean the same whichever judge runs. The defaults come from measurements on real
    photos with the dlib judge; ``benchmarks/judge.py`` prints them again.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Off: no photo is checked, no result scored or re-rendered (for deployments that cannot run the judge).
    enabled: bool = True
    # dlib needs nothing but its packages; arcface reuses the local engine's antelopev2 files on a GPU worker.
    model: JudgeModel = "dlib"
    min_score: float = Field(
        0.5, ge=0.0, le=1.0, description="an output scoring below this (or without a face) is re-rendered"
    )
    retries: int = Field(1, ge=0, le=3, description="free re-renders of a result below min_score (0: off)")
    same_person_score: float = Field(
        0.5, ge=0.0, le=1.0, description="every pair of an identity's photos must score at least this"
    )
    max_photos: int = Field(4, ge=1, description="photos of one identity")
    min_face_px: int = Field(64, ge=1, description="shorter side of the face box, unless the backend asks more")
    dominant_face_ratio: float = Field(
        1.6, ge=1.0, description="a face this many times wider than every other confident face wins a group photo"
    )
    min_luminance: float = Field(40.0, ge=0.0, le=255.0, description="mean luma of the face, 0-255")
    min_sharpness: float = Field(
        0.025, ge=0.0, description="variance of the Laplacian of the face at 128 px and unit contrast"
    )
    max_yaw: float = Field(0.25, gt=0.0, description="nose offset from the eyes' midline, in eye distances")
    max_screen_pattern: float = Field(
        2.2, gt=0.0, description="strongest isolated spatial frequency (log units) before a photo reads as a screen"
    )
