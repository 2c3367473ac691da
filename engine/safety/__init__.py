"""Output safety: an image classifier for renders that no provider has vouched for, and the policy for them."""

from engine.safety.classifier import (
    DEFAULT_MODEL,
    SafetyClassifier,
    SafetyModelError,
    SafetyModelSource,
    SafetyVerdict,
    ViTSafetyClassifier,
)
from engine.safety.settings import POLICY_PARAM, SafetyPolicy, SafetySettings

__all__ = [
    "DEFAULT_MODEL",
    "POLICY_PARAM",
    "SafetyClassifier",
    "SafetyModelError",
    "SafetyModelSource",
    "SafetyPolicy",
    "SafetySettings",
    "SafetyVerdict",
    "ViTSafetyClassifier",
]
