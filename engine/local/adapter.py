"""PuLID's trainable weights in one module: the IDFormer and the cross-attentions into FLUX."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from engine.local.idformer import IDFormer, IdFormerConfig, attend

# The released model inserts a cross-attention after every 2nd double block and every 4th single block.
DOUBLE_INTERVAL = 2
SINGLE_INTERVAL = 4


@dataclass(frozen=True)
class CrossAttentionConfig:
    """Sizes of one ID cross-attention; the defaults match FLUX.1 (width 3072) and the released file."""

    dim: int = 3072  # FLUX hidden size (image tokens)
    kv_dim: int = 2048  # IDFormer output width
    dim_head: int = 128
    heads: int = 16


@dataclass(frozen=True)
class InsertionPlan:
    """Which transformer blocks get a cross-attention after them, in the order of ``pulid_ca``."""

    double_blocks: tuple[int, ...]
    single_blocks: tuple[int, ...]

    @classmethod
    def for_blocks(cls, num_double: int, num_single: int) -> InsertionPlan:
        return cls(
            tuple(range(0, num_double, DOUBLE_INTERVAL)),
            tuple(range(0, num_single, SINGLE_INTERVAL)),
        )

    @property
    def count(self) -> int:
        return len(self.double_blocks) + len(self.single_blocks)


@dataclass(frozen=True)
class AdapterConfig:
    idformer: IdFormerConfig = field(default_factory=IdFormerConfig)
    cross_attention: CrossAttentionConfig = field(default_factory=CrossAttentionConfig)
    num_double_blocks: int = 19
    num_single_blocks: int = 38

    @property
    def plan(self) -> InsertionPlan:
        return InsertionPlan.for_blocks(self.num_double_blocks, self.num_single_blocks)


class IdCrossAttention(nn.Module):
    """Image tokens (queries) attend to the ID tokens; no biases, softmax in float32."""

    def __init__(self, config: CrossAttentionConfig | None = None) -> None:
        super().__init__()
        cfg = config or CrossAttentionConfig()
        inner = cfg.dim_head * cfg.heads
        self.heads = cfg.heads
        self.norm1 = nn.LayerNorm(cfg.kv_dim)
        self.norm2 = nn.LayerNorm(cfg.dim)
        self.to_q = nn.Linear(cfg.dim, inner, bias=False)
        self.to_kv = nn.Linear(cfg.kv_dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, cfg.dim, bias=False)

    def forward(self, id_tokens: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        id_tokens = self.norm1(id_tokens)
        image = self.norm2(image)
        if id_tokens.shape[0] != image.shape[0]:
            # One identity broadcast over a batch of images.
            id_tokens = id_tokens.expand(image.shape[0], -1, -1)
        q = self.to_q(image)
        k, v = self.to_kv(id_tokens).chunk(2, dim=-1)
        out: torch.Tensor = self.to_out(attend(q, k, v, self.heads))
        return out


class PulidAdapter(nn.Module):
    """Attribute names are those of ``pulid_flux_v0.9.1.safetensors``, so it loads with ``strict=True``."""

    def __init__(self, config: AdapterConfig | None = None) -> None:
        super().__init__()
        cfg = config or AdapterConfig()
        self.config = cfg
        self.pulid_encoder = IDFormer(cfg.idformer)
        self.pulid_ca = nn.ModuleList(IdCrossAttention(cfg.cross_attention) for _ in range(cfg.plan.count))

    def load_file(self, path: Path, dtype: torch.dtype | None = None) -> None:
        """Load released weights, cast to ``dtype`` (default: this module's); every key must match.

        Tensors are assigned rather than copied, so a module built on the meta device loads without
        ever allocating random weights.
        """
        from safetensors.torch import load_file

        target = dtype if dtype is not None else next(self.parameters()).dtype
        state = load_file(str(path), device="cpu")
        self.load_state_dict({k: v.to(target) for k, v in state.items()}, strict=True, assign=True)


def read_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor shapes in a safetensors file, read from its header without loading the data."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118


def config_from_shapes(
    shapes: dict[str, tuple[int, ...]], *, num_double_blocks: int, num_single_blocks: int
) -> AdapterConfig:
    """Sizes of the adapter stored in a file, so tiny test files and the released one load the same way.

    Head counts are not visible in shapes; the released model uses 16 heads in both parts.
    """
    _, queries, dim = shapes["pulid_encoder.latents"]
    output_dim = shapes["pulid_encoder.proj_out"][1]
    id_hidden, id_dim = shapes["pulid_encoder.id_embedding_mapping.0.weight"]
    num_id_tokens = shapes["pulid_encoder.id_embedding_mapping.6.weight"][0] // id_hidden
    vit_dim = shapes["pulid_encoder.mapping_0.0.weight"][1]
    depth = len({k.split(".")[2] for k in shapes if k.startswith("pulid_encoder.layers.")})
    encoder_inner = shapes["pulid_encoder.layers.0.0.to_q.weight"][0]
    ff_mult = shapes["pulid_encoder.layers.0.1.1.weight"][0] // dim
    ca_inner, ca_dim = shapes["pulid_ca.0.to_q.weight"]
    ca_kv_dim = shapes["pulid_ca.0.to_kv.weight"][1]
    heads = 16
    config = AdapterConfig(
        idformer=IdFormerConfig(
            dim=dim,
            depth=depth,
            dim_head=encoder_inner // heads,
            heads=heads,
            num_id_tokens=num_id_tokens,
            num_queries=queries,
            output_dim=output_dim,
            ff_mult=ff_mult,
            id_dim=id_dim,
            vit_dim=vit_dim,
        ),
        cross_attention=CrossAttentionConfig(dim=ca_dim, kv_dim=ca_kv_dim, dim_head=ca_inner // heads, heads=heads),
        num_double_blocks=num_double_blocks,
        num_single_blocks=num_single_blocks,
    )
    stored = len({k.split(".")[1] for k in shapes if k.startswith("pulid_ca.")})
    if stored != config.plan.count:
        raise ValueError(
            f"the PuLID file has {stored} cross-attentions but a transformer with {num_double_blocks} "
            f"double and {num_single_blocks} single blocks needs {config.plan.count}"
        )
    return config
