"""One dlib judge for the whole session: loading its models takes about a second."""

from __future__ import annotations

import pytest

from engine.judge import DlibJudge, Embedding, JudgeSettings, enroll
from engine.judge.enrollment import Enrollment
from tests.engine.judge import photos


@pytest.fixture(scope="session")
def judge() -> DlibJudge:
    return DlibJudge()


@pytest.fixture(scope="session")
def settings() -> JudgeSettings:
    return JudgeSettings()


@pytest.fixture(scope="session")
def tom_identity(judge: DlibJudge, settings: JudgeSettings) -> tuple[Embedding, ...]:
    enrollment = enroll(judge, [photos.tom()], settings)
    assert isinstance(enrollment, Enrollment)
    return enrollment.embeddings
