"""Skips GPU-marked local-engine tests where CUDA or torchvision is missing; a clean torch.compile state."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
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


@pytest.fixture
def fresh_dynamo() -> Iterator[None]:
    """No compiled graph from another test, and compile_blocks' process-wide settings undone afterwards."""
    import torch
    import torch.fx.experimental._config as fx_config

    limit, duck = torch._dynamo.config.recompile_limit, fx_config.use_duck_shape
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()
    torch._dynamo.config.recompile_limit, fx_config.use_duck_shape = limit, duck
