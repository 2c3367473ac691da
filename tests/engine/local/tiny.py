"""Tiny random-weight models in the local engine's layouts, for CPU tests and end-to-end fixtures.

``write_models_dir(path)`` writes a complete models directory (FLUX in diffusers layout, a PuLID file,
antelopev2-shaped ONNX models); ``LocalBackend(tiny_settings(path), renderer_factory=tiny_renderer,
weights_check=check_tiny_models)`` then renders 256x256 images through the real child process in
about a second each (plus a few seconds to start the process). EVA-CLIP (timm) and the BiSeNet face
parser (facexlib) need torchvision, so the tiny renderer swaps in small torch stand-ins for those two
and runs without facexlib's fallback face detector.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from engine.local.adapter import AdapterConfig, CrossAttentionConfig, PulidAdapter
from engine.local.idformer import IdFormerConfig
from engine.local.settings import LocalSettings

TRANSFORMER_CONFIG: dict[str, Any] = {
    "patch_size": 1,
    "in_channels": 16,
    "num_layers": 3,
    "num_single_layers": 5,
    "attention_head_dim": 16,
    "num_attention_heads": 2,
    "joint_attention_dim": 32,
    "pooled_projection_dim": 32,
    "guidance_embeds": True,
    "axes_dims_rope": (4, 6, 6),
}

FULL_TRANSFORMER_CONFIG: dict[str, Any] = {
    "patch_size": 1,
    "in_channels": 64,
    "num_layers": 19,
    "num_single_layers": 38,
    "attention_head_dim": 128,
    "num_attention_heads": 24,
    "joint_attention_dim": 4096,
    "pooled_projection_dim": 768,
    "guidance_embeds": True,
    "axes_dims_rope": (16, 56, 56),
}

# IDFormer sizes divisible by 16 heads; EVA stand-in: 5 hidden states of width 16 over 5 tokens.
TINY_IDFORMER = IdFormerConfig(
    dim=32,
    depth=10,
    dim_head=2,
    heads=16,
    num_id_tokens=5,
    num_queries=4,
    output_dim=16,
    ff_mult=2,
    id_dim=512 + 8,
    vit_dim=16,
)
TINY_EVA_EMBED = 8
TINY_EVA_TOKENS = 5


def tiny_adapter_config(config: dict[str, Any] = TRANSFORMER_CONFIG) -> AdapterConfig:
    return AdapterConfig(
        idformer=TINY_IDFORMER,
        cross_attention=CrossAttentionConfig(dim=32, kv_dim=16, dim_head=2, heads=16),
        num_double_blocks=config["num_layers"],
        num_single_blocks=config["num_single_layers"],
    )


def tiny_transformer(seed: int = 0, config: dict[str, Any] = TRANSFORMER_CONFIG) -> Any:
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(seed)
    return FluxTransformer2DModel(**config).eval()


def tiny_adapter(seed: int = 1, config: dict[str, Any] = TRANSFORMER_CONFIG) -> PulidAdapter:
    torch.manual_seed(seed)
    adapter = PulidAdapter(tiny_adapter_config(config)).eval()
    # Freshly built LayerNorms and zero-free random linears: make every weight non-trivial so a
    # wrong key or a skipped module changes the output.
    with torch.no_grad():
        for name, param in adapter.named_parameters():
            if name.endswith("norm1.weight") or name.endswith("norm2.weight"):
                param.add_(torch.randn_like(param) * 0.1)
    return adapter


def tiny_text_parts(seed: int = 2) -> dict[str, Any]:
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTokenizer,
        T5Config,
        T5EncoderModel,
        T5TokenizerFast,
    )

    torch.manual_seed(seed)
    words = ["a", "photo", "of", "person", "portrait", "in", "the", "city", "blurry", "ugly"]
    clip_vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for word in words:
        clip_vocab[f"{word}</w>"] = len(clip_vocab)
    for char in "abcdefghijklmnopqrstuvwxyz":
        clip_vocab.setdefault(char, len(clip_vocab))
        clip_vocab.setdefault(f"{char}</w>", len(clip_vocab))
    clip_tokenizer = CLIPTokenizer(
        vocab=clip_vocab,
        merges=[],
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    clip = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(clip_vocab),
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            max_position_embeddings=77,
            projection_dim=32,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    ).eval()
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(f"▁{w}", -1.0 - i) for i, w in enumerate(words)]
    t5_tokenizer = T5TokenizerFast(vocab=pieces, extra_ids=0)
    t5 = T5EncoderModel(
        T5Config(
            vocab_size=len(pieces),
            d_model=32,
            d_ff=37,
            d_kv=8,
            num_heads=4,
            num_layers=2,
            feed_forward_proj="gated-gelu",
            dropout_rate=0.0,
        )
    ).eval()
    return {
        "tokenizer": clip_tokenizer,
        "text_encoder": clip,
        "tokenizer_2": t5_tokenizer,
        "text_encoder_2": t5,
    }


def tiny_vae(seed: int = 3) -> Any:
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        # Four levels: the same 8x downscale as FLUX's VAE, so sizes follow production's rules.
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    ).eval()


def tiny_scheduler() -> Any:
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )


class TinyEva(nn.Module):
    """Stands in for EVA02-CLIP-L: a projected, normalised CLS vector and 5 hidden states."""

    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, 16, kernel_size=56, stride=56)
        self.blocks = nn.ModuleList(nn.Linear(16, 16) for _ in range(5))
        self.head = nn.Linear(16, TINY_EVA_EMBED)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        tokens = self.patch(pixels).flatten(2).transpose(1, 2)[:, :TINY_EVA_TOKENS]
        hidden = []
        for block in self.blocks:
            tokens = tokens + torch.tanh(block(tokens))
            hidden.append(tokens)
        cls = self.head(tokens[:, 0])
        return torch.nn.functional.normalize(cls, dim=-1), hidden


class CentreParser:
    """Stands in for BiSeNet: the central disc is skin (label 1), the rest background (label 0)."""

    def parse(self, aligned: np.ndarray) -> np.ndarray:
        h, w = aligned.shape[:2]
        yy, xx = np.mgrid[:h, :w]
        return (((yy - h / 2) ** 2 + (xx - w / 2) ** 2) < (0.35 * h) ** 2).astype(np.int64)


def write_flux_dir(path: Path, config: dict[str, Any] = TRANSFORMER_CONFIG) -> Path:
    parts = tiny_text_parts()
    tiny_transformer(config=config).save_pretrained(path / "transformer")
    tiny_vae().save_pretrained(path / "vae")
    tiny_scheduler().save_pretrained(path / "scheduler")
    for name, part in parts.items():
        part.save_pretrained(path / name)
    (path / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    return path


def write_pulid_file(path: Path, seed: int = 1, config: dict[str, Any] = TRANSFORMER_CONFIG) -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in tiny_adapter(seed, config).state_dict().items()}
    save_file(state, str(path))
    return path


def write_models_dir(root: Path, config: dict[str, Any] = TRANSFORMER_CONFIG) -> Path:
    """A models directory in the production layout, with tiny random weights."""
    from engine.local import weights
    from tests.engine.local.face_models import write_antelope_dir

    write_flux_dir(root / weights.FLUX_DIR, config)
    write_pulid_file(root / weights.PULID_FILE, config=config)
    write_antelope_dir(root / weights.ANTELOPE_DIR)
    return root


def check_tiny_models(models_dir: Path) -> list[Any]:
    """``weights.check`` without the two artifacts the tiny renderer replaces (EVA-CLIP, face parser)."""
    from engine.local import weights

    skip = (weights.EVA_FILE.split("/")[0], weights.FACE_PARSER_DIR)
    problems = [p for p in weights.check(models_dir) if p.path.relative_to(models_dir).parts[0] not in skip]
    # The antelopev2 stand-ins have the real names but not the real (pinned) sizes.
    return [p for p in problems if not (p.path.parent.name == weights.ANTELOPE_DIR and p.reason.startswith("size"))]


def tiny_settings(models_dir: Path, **overrides: Any) -> LocalSettings:
    base = LocalSettings(
        enabled=True,
        models_dir=models_dir,
        device="cpu",
        face_device="cpu",
        compute_dtype="float32",
        det_size=256,
        min_face_px=24,
        max_sequence_length=16,
        startup_timeout_s=120,
    )
    return base.model_copy(update=overrides)


def tiny_renderer(settings: LocalSettings, **options: Any) -> Any:
    """The production renderer loaded from ``settings.models_dir``, with the torchvision parts swapped."""
    from engine.local.renderer import load_renderer

    def eva_loader(device: Any, dtype: Any) -> TinyEva:
        torch.manual_seed(4)
        return TinyEva().to(device=device, dtype=dtype).eval()

    options.setdefault("fallback_loader", lambda: None)
    return load_renderer(settings, eva_loader=eva_loader, parser_loader=CentreParser, **options)
