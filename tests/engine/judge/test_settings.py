"""Judge settings: defaults, bounds, and composition under LIKENESS_JUDGE__* by the application settings."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from engine.judge import JudgeSettings


class Composed(BaseSettings):
    """How the application composes an engine section: prefix LIKENESS_, nested with __."""

    model_config = SettingsConfigDict(env_prefix="LIKENESS_", env_nested_delimiter="__")
    judge: JudgeSettings = JudgeSettings()


def test_defaults() -> None:
    settings = JudgeSettings()
    assert (settings.model, settings.min_score, settings.retries, settings.max_photos) == ("dlib", 0.5, 1, 4)
    assert (settings.min_luminance, settings.min_sharpness, settings.max_yaw) == (40.0, 0.025, 0.25)


def test_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIKENESS_JUDGE__MIN_SCORE", "0.6")
    monkeypatch.setenv("LIKENESS_JUDGE__RETRIES", "0")
    monkeypatch.setenv("LIKENESS_JUDGE__MODEL", "arcface")
    monkeypatch.setenv("LIKENESS_JUDGE__MIN_FACE_PX", "96")
    judge = Composed().judge
    assert (judge.min_score, judge.retries, judge.model, judge.min_face_px) == (0.6, 0, "arcface", 96)


@pytest.mark.parametrize(
    "bad", [{"min_score": 1.5}, {"retries": -1}, {"model": "mmod"}, {"dominant_face_ratio": 0.5}, {"typo": 1}]
)
def test_bad_values_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        JudgeSettings.model_validate(bad)
