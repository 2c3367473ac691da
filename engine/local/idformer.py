"""The IDFormer: a perceiver that turns ArcFace + EVA-CLIP features into PuLID's ID tokens."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class IdFormerConfig:
    """Sizes of the IDFormer; the defaults are those of the released PuLID-FLUX weights."""

    dim: int = 1024
    depth: int = 10
    dim_head: int = 64
    heads: int = 16
    num_id_tokens: int = 5
    num_queries: int = 32
    output_dim: int = 2048
    ff_mult: int = 4
    id_dim: int = 1280  # ArcFace 512 + EVA-CLIP projected CLS 768
    vit_dim: int = 1024  # width of the EVA-CLIP hidden states

    @property
    def groups(self) -> int:
        """One EVA hidden state per group of two perceiver layers."""
        return self.depth // 2


def _mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    # Layout (Linear, LN, LeakyReLU) x 2 + Linear keeps the released key names (.0, .3, .6; LN at .1, .4).
    return nn.Sequential(
        nn.Linear(in_dim, hidden),
        nn.LayerNorm(hidden),
        nn.LeakyReLU(),
        nn.Linear(hidden, hidden),
        nn.LayerNorm(hidden),
        nn.LeakyReLU(),
        nn.Linear(hidden, out_dim),
    )


def _feed_forward(dim: int, mult: int) -> nn.Sequential:
    inner = dim * mult
    return nn.Sequential(
        nn.LayerNorm(dim),
        nn.Linear(dim, inner, bias=False),
        nn.GELU(),
        nn.Linear(inner, dim, bias=False),
    )


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Multi-head attention with the softmax in float32; inputs are (B, L, heads * dim_head)."""
    batch, q_len, width = q.shape
    dim_head = width // heads

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(batch, t.shape[1], heads, dim_head).transpose(1, 2)

    qh, kh, vh = split(q), split(k), split(v)
    # Scaling q and k by dim_head**-0.25 each (rather than the product once) keeps bf16 logits small.
    scale = dim_head**-0.25
    logits = (qh * scale) @ (kh * scale).transpose(-2, -1)
    weights = torch.softmax(logits.float(), dim=-1).to(q.dtype)
    out = weights @ vh
    return out.transpose(1, 2).reshape(batch, q_len, width)


class PerceiverAttention(nn.Module):
    """Latents attend to [context, latents] (the IDFormer's layer)."""

    def __init__(self, dim: int, dim_head: int, heads: int) -> None:
        super().__init__()
        inner = dim_head * heads
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, context: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        context = self.norm1(context)
        latents = self.norm2(latents)
        q = self.to_q(latents)
        k, v = self.to_kv(torch.cat([context, latents], dim=1)).chunk(2, dim=-1)
        out: torch.Tensor = self.to_out(attend(q, k, v, self.heads))
        return out


class IDFormer(nn.Module):
    """Maps ID conditions (B, n, id_dim) and EVA hidden states to (B, num_queries, output_dim).

    With n photos the MLP makes ``num_id_tokens * n`` ID tokens and the hidden states of all photos are
    concatenated along the token axis, so the learned queries attend over every photo at once.
    """

    def __init__(self, config: IdFormerConfig | None = None) -> None:
        super().__init__()
        cfg = config or IdFormerConfig()
        self.config = cfg
        self.latents = nn.Parameter(torch.randn(1, cfg.num_queries, cfg.dim) * cfg.dim**-0.5)
        self.proj_out = nn.Parameter(cfg.dim**-0.5 * torch.randn(cfg.dim, cfg.output_dim))
        self.layers = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(cfg.dim, cfg.dim_head, cfg.heads), _feed_forward(cfg.dim, cfg.ff_mult)])
            for _ in range(cfg.depth)
        )
        for i in range(cfg.groups):
            self.add_module(f"mapping_{i}", _mlp(cfg.vit_dim, cfg.dim, cfg.dim))
        self.id_embedding_mapping = _mlp(cfg.id_dim, cfg.dim, cfg.dim * cfg.num_id_tokens)

    def forward(self, id_cond: torch.Tensor, vit_hidden: Sequence[torch.Tensor]) -> torch.Tensor:
        cfg = self.config
        if len(vit_hidden) != cfg.groups:
            raise ValueError(f"expected {cfg.groups} EVA hidden states, got {len(vit_hidden)}")
        if id_cond.ndim == 2:
            id_cond = id_cond[:, None]
        batch, photos = id_cond.shape[:2]
        id_tokens = self.id_embedding_mapping(id_cond).reshape(batch, photos * cfg.num_id_tokens, cfg.dim)
        latents = torch.cat([self.latents.expand(batch, -1, -1), id_tokens], dim=1)
        for group in range(cfg.groups):
            mapping: nn.Module = getattr(self, f"mapping_{group}")
            context = torch.cat([id_tokens, mapping(vit_hidden[group])], dim=1)
            for layer in self.layers[group * 2 : group * 2 + 2]:
                attn: nn.Module = layer[0]  # type: ignore[index]
                ff: nn.Module = layer[1]  # type: ignore[index]
                latents = attn(context, latents) + latents
                latents = ff(latents) + latents
        out: torch.Tensor = latents[:, : cfg.num_queries] @ self.proj_out
        return out
