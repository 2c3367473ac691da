"""The ViT safety classifier's plumbing on a tiny random-weight model: loading, labels, thresholds, batches.

Random weights say nothing about accuracy; the classification head is set by hand so that each test knows
which label must win.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.safety import (
    DEFAULT_MODEL,
    SafetyModelError,
    SafetyPolicy,
    SafetySettings,
    ViTSafetyClassifier,
)


def tiny_vit(
    path: Path, labels: tuple[str, ...] = ("normal", "nsfw"), head_bias: tuple[float, ...] | None = (0.0, 0.0)
) -> Path:
    """A 1-layer ViT of 32x32 inputs in the layout ``likeness models download`` leaves on disk, whose logits
    are exactly ``head_bias`` (the head's weights are zero), or random like the rest when it is None."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    config = ViTConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
        id2label=dict(enumerate(labels)),
        label2id={label: index for index, label in enumerate(labels)},
    )
    torch.manual_seed(0)
    model = ViTForImageClassification(config)
    if head_bias is not None:
        head: Any = model.classifier  # a Linear layer; transformers' stubs type it loosely
        with torch.no_grad():
            head.weight.zero_()
            head.bias.copy_(torch.tensor(head_bias))
    model.save_pretrained(path)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    return path


def photo(value: int = 128) -> np.ndarray:
    return np.full((48, 64, 3), value, dtype=np.uint8)


def test_an_unsafe_head_flags_every_image_with_its_probability(tmp_path: Path) -> None:
    classifier = ViTSafetyClassifier(tiny_vit(tmp_path / "m", head_bias=(0.0, 2.0)))
    verdicts = classifier.classify([photo(), photo(30)])
    expected = float(np.exp(2.0) / (1 + np.exp(2.0)))
    assert [v.unsafe for v in verdicts] == [True, True]
    assert [v.unsafe_score for v in verdicts] == pytest.approx([expected, expected], abs=1e-5)
    assert {v.label for v in verdicts} == {"nsfw"}
    assert verdicts[0].classifier == "vit:m"


def test_a_safe_head_passes_and_the_threshold_decides(tmp_path: Path) -> None:
    directory = tiny_vit(tmp_path / "m", head_bias=(1.0, 0.0))
    [verdict] = ViTSafetyClassifier(directory).classify([photo()])
    assert (verdict.classifier, verdict.unsafe, verdict.label) == ("vit:m", False, "normal")
    assert verdict.unsafe_score == pytest.approx(1 / (1 + np.e), abs=1e-5)
    [strict] = ViTSafetyClassifier(directory, threshold=0.25).classify([photo()])
    assert strict.unsafe and strict.label == "normal"


def test_several_unsafe_labels_add_up_whatever_their_case(tmp_path: Path) -> None:
    directory = tiny_vit(tmp_path / "m", labels=("Drawing", "Neutral", "Hentai", "Porn"), head_bias=(0, 0, 0, 0))
    classifier = ViTSafetyClassifier(directory, unsafe_labels=("hentai", "porn"))
    [verdict] = classifier.classify([photo()])
    assert verdict.unsafe_score == pytest.approx(0.5, abs=1e-5) and verdict.unsafe
    assert classifier.labels == ["Drawing", "Neutral", "Hentai", "Porn"]


def test_batches_keep_the_order_of_the_images(tmp_path: Path) -> None:
    classifier = ViTSafetyClassifier(tiny_vit(tmp_path / "m", head_bias=None), batch_size=2)
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, size=(40, 40, 3), dtype=np.uint8) for _ in range(5)]
    batched = [verdict.unsafe_score for verdict in classifier.classify(images)]
    alone = [classifier.classify([image])[0].unsafe_score for image in images]
    assert batched == pytest.approx(alone, abs=1e-5)
    assert len(set(np.round(alone, 6))) == 5  # the images really score differently
    assert classifier.classify([]) == []


def test_a_model_without_the_unsafe_labels_is_refused(tmp_path: Path) -> None:
    directory = tiny_vit(tmp_path / "m", labels=("cat", "dog"))
    with pytest.raises(SafetyModelError, match=r"\['cat', 'dog'\]"):
        ViTSafetyClassifier(directory)


def test_missing_files_say_which(tmp_path: Path) -> None:
    with pytest.raises(SafetyModelError, match=r"config\.json, preprocessor_config\.json"):
        ViTSafetyClassifier(tmp_path)


def test_only_rgb_uint8_images(tmp_path: Path) -> None:
    classifier = ViTSafetyClassifier(tiny_vit(tmp_path / "m"))
    with pytest.raises(ValueError, match="RGB uint8"):
        classifier.classify([np.zeros((32, 32), dtype=np.uint8)])


def test_the_default_model_is_permissively_licensed_and_names_its_files() -> None:
    assert DEFAULT_MODEL.licence == "Apache-2.0"
    assert set(DEFAULT_MODEL.files) >= {"config.json", "preprocessor_config.json"}
    assert any(file.endswith(".safetensors") for file in DEFAULT_MODEL.files)


def test_settings_defaults_and_bounds() -> None:
    settings = SafetySettings()
    assert (settings.policy, settings.threshold, settings.unsafe_labels) == (SafetyPolicy.BLOCK, 0.5, ("nsfw",))
    assert SafetySettings(policy="spoiler").policy is SafetyPolicy.SPOILER
    with pytest.raises(ValueError):
        SafetySettings(threshold=2.0)
    with pytest.raises(ValueError):
        SafetySettings(policy="maybe")


def test_models_download_fetches_the_classifier_and_check_does_not_need_it(tmp_path: Path) -> None:
    from engine.local import weights

    [artifact] = [a for a in weights.MANIFEST if a.repo_id == DEFAULT_MODEL.repo_id]
    assert artifact.target == "safety/nsfw_image_detection" and artifact.optional
    assert set(artifact.patterns) == {"config.json", "model.safetensors", "preprocessor_config.json"}
    assert artifact.licence == "Apache-2.0"
    assert not any("safety" in str(problem.path) for problem in weights.check(tmp_path))
