"""Skips GPU-marked local-engine tests where CUDA or torchvision is missing."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


def _gpu_unavailable_reason() -> str | None:
    if importlib.util.find_spec("torchvision") is None:
        return "needs torchvision (EVA-CLIP via timm, facexlib), which has no CPU build here"
    import torch

    if not torch.cuda.is_available():
        return "needs a CUDA GPU"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _gpu_unavailable_reason()
    if reason is None:
        return
    here = Path(__file__).parent
    for item in items:
        if "gpu" in item.keywords and here in item.path.parents:
            item.add_marker(pytest.mark.skip(reason=reason))
