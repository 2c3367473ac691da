"""The face judge and the output safety classifier a process uses, opened from the settings."""

from __future__ import annotations

import logging

from bot.errors import OperatorError
from bot.settings import Settings
from engine.judge import FaceJudge, JudgeUnavailableError, open_judge
from engine.local.weights import ANTELOPE_DIR
from engine.safety import SafetyClassifier, SafetyModelError

log = logging.getLogger(__name__)


def open_face_judge(settings: Settings) -> FaceJudge | None:
    """The judge LIKENESS_JUDGE__MODEL names (None with LIKENESS_JUDGE__ENABLED=false); an OperatorError when
    it cannot load."""
    if not settings.judge.enabled:
        log.debug("face judge off: photos are not checked and results not scored")
        return None
    try:
        judge = open_judge(
            settings.judge, arcface_dir=settings.models_dir / ANTELOPE_DIR, device=settings.local.face_device
        )
    except JudgeUnavailableError as exc:
        raise OperatorError(
            f"LIKENESS_JUDGE__MODEL: {exc} (or turn the judge off: LIKENESS_JUDGE__ENABLED=false)"
        ) from None
    except Exception as exc:  # the arcface judge's own loading errors: missing or unreadable model files
        raise OperatorError(f"LIKENESS_JUDGE__MODEL: the {settings.judge.model} judge did not load: {exc}") from exc
    log.debug("face judge %s loaded", judge.name)
    return judge


def open_safety_classifier(settings: Settings, *, local: bool) -> SafetyClassifier | None:
    """The classifier for outputs no provider checked, when its files are where `likeness models download`
    puts them (or LIKENESS_SAFETY__MODEL_DIR says); None when they are not, with a warning where the local
    engine (whose outputs nothing else checks) renders."""
    directory = settings.safety_model_dir
    if not (directory / "config.json").is_file():
        log.log(
            logging.WARNING if local else logging.DEBUG,
            "no safety classifier in %s: outputs without a provider's verdict are not checked "
            "(`likeness models download` fetches it)",
            directory,
        )
        return None
    try:
        from engine.safety import ViTSafetyClassifier

        classifier = ViTSafetyClassifier(
            directory,
            threshold=settings.safety.threshold,
            unsafe_labels=settings.safety.unsafe_labels,
            device=settings.safety.device,
        )
    except ImportError as exc:  # transformers and torch come with the `local` extra
        log.warning("the safety classifier needs transformers and torch (%s): outputs are not checked", exc)
        return None
    except (SafetyModelError, OSError, ValueError) as exc:  # missing or unreadable files
        raise OperatorError(f"LIKENESS_SAFETY__MODEL_DIR: {exc}") from None
    log.debug("safety classifier %s loaded", classifier.name)
    return classifier
