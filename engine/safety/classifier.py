"""An image safety classifier: a ViT image classifier (transformers) loaded from a local directory."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class SafetyModelSource:
    """Where ``likeness models download`` fetches the default classifier from, and what it must keep."""

    name: str
    repo_id: str
    target: str  # directory under the models dir
    files: tuple[str, ...]
    licence: str


DEFAULT_MODEL = SafetyModelSource(
    name="NSFW image detection (ViT-B/16)",
    repo_id="Falconsai/nsfw_image_detection",
    target="safety/nsfw_image_detection",
    files=("config.json", "model.safetensors", "preprocessor_config.json"),
    licence="Apache-2.0",
)


@dataclass(frozen=True)
class SafetyVerdict:
    """One image's verdict. ``unsafe_score`` is the probability of the unsafe labels together."""

    classifier: str
    unsafe_score: float
    unsafe: bool
    label: str  # the most probable label


class SafetyClassifier(Protocol):
    @property
    def name(self) -> str:
        """Recorded with every verdict."""
        ...

    def classify(self, images: Sequence[np.ndarray]) -> list[SafetyVerdict]:
        """One verdict per RGB uint8 image, in order."""
        ...


class SafetyModelError(RuntimeError):
    """The classifier's files are missing or do not name the unsafe labels; the message says which."""


class ViTSafetyClassifier:
    """Any transformers image-classification model with a softmax head whose labels include the unsafe ones
    (the default, Falconsai's ``nsfw_image_detection``, has ``normal`` and ``nsfw``). Loaded from local files
    only: the weights come from ``likeness models download``. One call at a time per instance."""

    def __init__(
        self,
        model_dir: Path,
        *,
        threshold: float = 0.5,
        unsafe_labels: Sequence[str] = ("nsfw",),
        device: str = "cpu",
        batch_size: int = 8,
    ) -> None:
        missing = [file for file in ("config.json", "preprocessor_config.json") if not (model_dir / file).is_file()]
        if missing:
            raise SafetyModelError(f"safety classifier files missing in {model_dir}: {', '.join(missing)}")
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        processors: Any = AutoImageProcessor
        models: Any = AutoModelForImageClassification
        self._processor: Any = processors.from_pretrained(str(model_dir), local_files_only=True)
        model: Any = models.from_pretrained(str(model_dir), local_files_only=True)
        self._model: Any = model.to(device).eval()
        labels = {int(index): str(label) for index, label in self._model.config.id2label.items()}
        self._labels = [labels[index] for index in range(len(labels))]
        wanted = {label.lower() for label in unsafe_labels}
        self._unsafe = [index for index, label in enumerate(self._labels) if label.lower() in wanted]
        if not self._unsafe:
            raise SafetyModelError(f"the safety classifier's labels {self._labels} include none of {sorted(wanted)}")
        self.name = f"vit:{model_dir.name}"
        self._threshold = threshold
        self._device = device
        self._batch_size = batch_size
        self._lock = threading.Lock()

    @property
    def labels(self) -> list[str]:
        return list(self._labels)

    def classify(self, images: Sequence[np.ndarray]) -> list[SafetyVerdict]:
        import torch

        verdicts: list[SafetyVerdict] = []
        for start in range(0, len(images), self._batch_size):
            batch = [_rgb(image) for image in images[start : start + self._batch_size]]
            with self._lock, torch.inference_mode():
                inputs = self._processor(images=batch, return_tensors="pt").to(self._device)
                probabilities = self._model(**inputs).logits.float().softmax(dim=-1).cpu().numpy()
            for row in probabilities:
                unsafe_score = float(row[self._unsafe].sum())
                verdicts.append(
                    SafetyVerdict(
                        classifier=self.name,
                        unsafe_score=unsafe_score,
                        unsafe=unsafe_score >= self._threshold,
                        label=self._labels[int(row.argmax())],
                    )
                )
        return verdicts


def _rgb(image: np.ndarray) -> np.ndarray:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
    return image
