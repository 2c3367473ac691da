"""Adds PuLID's ID cross-attention after FLUX transformer blocks through diffusers' hook registry."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from diffusers.hooks.hooks import HookRegistry, ModelHook

from engine.local.adapter import InsertionPlan, PulidAdapter

logger = logging.getLogger(__name__)

HOOK_NAME = "likeness_pulid"


class IdentityInjection:
    """The ID embedding and weight that the block hooks read while a transformer pass runs.

    Hooks are registered once; switching the identity between passes (cond, uncond, none) only changes
    this object, so the transformer is never re-wrapped and ``torch.compile`` sees the same modules.
    """

    def __init__(self, adapter: PulidAdapter) -> None:
        self.adapter = adapter
        self._id_tokens: torch.Tensor | None = None
        self._weight: torch.Tensor | None = None
        self._blocks: list[torch.nn.Module] = []

    @property
    def is_active(self) -> bool:
        return self._id_tokens is not None

    def activate(self, id_tokens: torch.Tensor, weight: float) -> None:
        self._id_tokens = id_tokens
        # A tensor (not a float) so a compiled graph is not specialised on the weight's value.
        self._weight = torch.tensor(weight, dtype=id_tokens.dtype, device=id_tokens.device)

    def deactivate(self) -> None:
        self._id_tokens = None
        self._weight = None

    @contextmanager
    def using(self, id_tokens: torch.Tensor | None, weight: float) -> Iterator[None]:
        """Inject ``id_tokens`` during the block; ``None`` or a zero weight runs plain FLUX."""
        if id_tokens is None or weight == 0:
            self.deactivate()
        else:
            self.activate(id_tokens, weight)
        try:
            yield
        finally:
            self.deactivate()

    def residual(self, index: int, image: torch.Tensor) -> torch.Tensor | None:
        """The weighted cross-attention output for image tokens, or None when no identity is active."""
        if self._id_tokens is None or self._weight is None:
            return None
        ca = self.adapter.pulid_ca[index]
        id_tokens = self._id_tokens.to(device=image.device, dtype=image.dtype)
        out: torch.Tensor = self._weight.to(image.device, image.dtype) * ca(id_tokens, image)
        return out

    def attach(self, transformer: Any) -> None:
        """Register a hook after each planned block of a diffusers ``FluxTransformer2DModel``."""
        if self._blocks:
            raise RuntimeError("the identity injection is already attached")
        plan = InsertionPlan.for_blocks(len(transformer.transformer_blocks), len(transformer.single_transformer_blocks))
        if plan.count != len(self.adapter.pulid_ca):
            raise ValueError(
                f"the adapter has {len(self.adapter.pulid_ca)} cross-attentions, the transformer needs {plan.count}"
            )
        blocks = [transformer.transformer_blocks[i] for i in plan.double_blocks]
        blocks += [transformer.single_transformer_blocks[i] for i in plan.single_blocks]
        for index, block in enumerate(blocks):
            registry = HookRegistry.check_if_exists_or_initialize(block)
            registry.register_hook(_CrossAttentionHook(self, index), HOOK_NAME)
        self._blocks = blocks
        logger.debug("ID cross-attention attached after %d blocks", len(blocks))

    def detach(self) -> None:
        for block in self._blocks:
            HookRegistry.check_if_exists_or_initialize(block).remove_hook(HOOK_NAME, recurse=False)
        self._blocks = []


class _CrossAttentionHook(ModelHook):
    """Adds ``weight * CA(id, image)`` to the image tokens a block returns."""

    def __init__(self, injection: IdentityInjection, index: int) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.injection = injection
        self.index = index

    def post_forward(self, module: torch.nn.Module, output: Any) -> Any:
        # Both FLUX block kinds return (text tokens, image tokens) in diffusers >= 0.35.
        text, image = output
        residual = self.injection.residual(self.index, image)
        if residual is None:
            return output
        return text, image + residual
