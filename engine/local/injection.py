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
    """The ID tokens and weight that the block hooks read while a transformer pass runs.

    Hooks are registered once; switching the identity between passes (cond, uncond, none) only changes
    this object, so the transformer is never re-wrapped and ``torch.compile`` sees the same modules.
    Both values are device tensors made once per job (``weight_tensor``): a Python float would be baked
    into a compiled graph, and a tensor made per pass costs a host-to-device copy every pass.
    """

    def __init__(self, adapter: PulidAdapter) -> None:
        self.adapter = adapter
        self.id_tokens: torch.Tensor | None = None
        self.weight: torch.Tensor | None = None
        self._blocks: list[torch.nn.Module] = []
        self._off: tuple[torch.Tensor, torch.Tensor] | None = None

    def keep_graph_static(self) -> None:
        """From now on "no identity" is zero ID tokens at weight zero instead of skipping the cross-attention.

        For ``torch.compile``: the hooks then always take the same path, so a compiled block has one graph
        instead of one per state, and the blocks after a hooked one always see the same strides. It costs
        the cross-attentions' share of a step (about 3 %) on steps without an identity; adding
        ``0 * CA(...)`` leaves the image tokens bit for bit unchanged.
        """
        parameter = next(self.adapter.parameters())
        cfg = self.adapter.config
        tokens = torch.zeros(
            1,
            cfg.idformer.num_queries,
            cfg.cross_attention.kv_dim,
            device=parameter.device,
            dtype=parameter.dtype,
        )
        self._off = (tokens, torch.zeros((), device=parameter.device, dtype=parameter.dtype))
        self.deactivate()

    @property
    def is_active(self) -> bool:
        return self.id_tokens is not None and (self._off is None or self.id_tokens is not self._off[0])

    @staticmethod
    def weight_tensor(weight: float, like: torch.Tensor) -> torch.Tensor:
        """The 0-d weight on ``like``'s device and dtype; build it once per job, not per pass."""
        return torch.full((), weight, device=like.device, dtype=like.dtype)

    def activate(self, id_tokens: torch.Tensor, weight: torch.Tensor) -> None:
        self.id_tokens = id_tokens
        self.weight = weight

    def deactivate(self) -> None:
        self.id_tokens, self.weight = self._off if self._off is not None else (None, None)

    @contextmanager
    def using(self, id_tokens: torch.Tensor | None, weight: torch.Tensor | None) -> Iterator[None]:
        """Inject ``id_tokens`` during the block; ``None`` for either runs plain FLUX."""
        if id_tokens is None or weight is None:
            self.deactivate()
        else:
            self.activate(id_tokens, weight)
        try:
            yield
        finally:
            self.deactivate()

    def attach(self, transformer: Any) -> None:
        """Register a hook after each planned block of a diffusers ``FluxTransformer2DModel``.

        Call before ``enable_cache`` (so a cached step skips the cross-attentions of skipped blocks) and
        before ``compile_repeated_blocks`` (so the compiled blocks include them).
        """
        if self._blocks:
            raise RuntimeError("the identity injection is already attached")
        plan = InsertionPlan.for_blocks(len(transformer.transformer_blocks), len(transformer.single_transformer_blocks))
        if plan.count != len(self.adapter.pulid_ca):
            raise ValueError(
                f"the adapter has {len(self.adapter.pulid_ca)} cross-attentions, the transformer needs {plan.count}"
            )
        blocks = [transformer.transformer_blocks[i] for i in plan.double_blocks]
        blocks += [transformer.single_transformer_blocks[i] for i in plan.single_blocks]
        for block, ca in zip(blocks, self.adapter.pulid_ca, strict=True):
            registry = HookRegistry.check_if_exists_or_initialize(block)
            registry.register_hook(_CrossAttentionHook(self, ca), HOOK_NAME)
        self._blocks = blocks
        logger.debug("ID cross-attention attached after %d blocks", len(blocks))

    def detach(self) -> None:
        for block in self._blocks:
            HookRegistry.check_if_exists_or_initialize(block).remove_hook(HOOK_NAME, recurse=False)
        self._blocks = []


class _CrossAttentionHook(ModelHook):
    """Adds ``weight * CA(id, image)`` to the image tokens a block returns.

    Each hook holds its own cross-attention module rather than an index into ``pulid_ca``: all hooks
    share one code object, and ``torch.compile`` specialises on an int it reads, so an index made one
    graph per hook, past dynamo's recompile limit (with ``fullgraph=True``, an error on every job).
    """

    def __init__(self, injection: IdentityInjection, ca: torch.nn.Module) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.injection = injection
        self.ca = ca

    def post_forward(self, module: torch.nn.Module, output: Any) -> Any:
        # Both FLUX block kinds return (text tokens, image tokens) in diffusers >= 0.35.
        id_tokens, weight = self.injection.id_tokens, self.injection.weight
        if id_tokens is None or weight is None:
            return output
        text, image = output
        return text, image + weight * self.ca(id_tokens, image)
