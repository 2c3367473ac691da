"""The FLUX denoise loop with PuLID: per-step ID gating, true CFG with the unconditional ID, VAE decode."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from engine.local.injection import IdentityInjection

# Used when true CFG runs without a negative prompt from the user.
DEFAULT_NEGATIVE_PROMPT = "bad quality, worst quality, text, signature, watermark, extra limbs"


@dataclass(frozen=True)
class PromptEmbedding:
    text: torch.Tensor  # (1, L, joint_attention_dim): T5 tokens
    pooled: torch.Tensor  # (1, pooled_projection_dim): CLIP-L pooled vector
    text_ids: torch.Tensor  # (L, 3): all zero for text


@dataclass(frozen=True)
class IdEmbedding:
    cond: torch.Tensor  # (1, 32, 2048): the identity's ID tokens
    uncond: torch.Tensor  # the IDFormer applied to all-zero inputs, for the negative pass of true CFG


@dataclass(frozen=True)
class SamplingParams:
    width: int
    height: int
    steps: int
    guidance: float
    id_weight: float = 1.0
    start_step: int = 0
    true_cfg: float = 1.0
    # The negative pass starts at this step: at step 0 the latents are pure noise for both passes.
    cfg_start_step: int = 1

    @property
    def uses_true_cfg(self) -> bool:
        return abs(self.true_cfg - 1.0) > 0.01


@dataclass(frozen=True)
class TextEncoders:
    tokenizer: Any  # CLIP
    text_encoder: Any
    tokenizer_2: Any  # T5
    text_encoder_2: Any


@torch.no_grad()
def encode_prompt(
    encoders: TextEncoders, prompt: str, *, max_sequence_length: int, device: torch.device, dtype: torch.dtype
) -> PromptEmbedding:
    clip_len = min(
        int(encoders.tokenizer.model_max_length),
        int(encoders.text_encoder.config.max_position_embeddings),
    )
    clip_ids = encoders.tokenizer(
        [prompt], padding="max_length", max_length=clip_len, truncation=True, return_tensors="pt"
    ).input_ids
    pooled = encoders.text_encoder(clip_ids.to(device), output_hidden_states=False).pooler_output
    t5_ids = encoders.tokenizer_2(
        [prompt], padding="max_length", max_length=max_sequence_length, truncation=True, return_tensors="pt"
    ).input_ids
    text = encoders.text_encoder_2(t5_ids.to(device), output_hidden_states=False)[0]
    return PromptEmbedding(
        text=text.to(dtype),
        pooled=pooled.to(dtype),
        text_ids=torch.zeros(text.shape[1], 3, device=device, dtype=dtype),
    )


def latent_size(width: int, height: int, vae_scale_factor: int) -> tuple[int, int]:
    """Latent (height, width): VAE downscale, rounded to whole 2x2 patches."""
    return 2 * (height // (vae_scale_factor * 2)), 2 * (width // (vae_scale_factor * 2))


def pack(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H/2 * W/2, 4C): 2x2 patches become tokens."""
    b, c, h, w = latents.shape
    x = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Inverse of ``pack`` for a latent of (height, width)."""
    b, _, d = tokens.shape
    x = tokens.view(b, height // 2, width // 2, d // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, d // 4, height, width)


def image_ids(height: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """RoPE positions (0, row, col) of the packed image tokens for a latent of (height, width)."""
    ids = torch.zeros(height // 2, width // 2, 3)
    ids[..., 1] = torch.arange(height // 2)[:, None]
    ids[..., 2] = torch.arange(width // 2)[None, :]
    return ids.reshape(-1, 3).to(device=device, dtype=dtype)


def initial_noise(
    seed: int, channels: int, height: int, width: int, *, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """Packed noise for one image. Drawn on the CPU in float32, so a seed gives the same start anywhere."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    noise = torch.randn((1, channels, height, width), generator=generator, dtype=torch.float32)
    return pack(noise).to(device=device, dtype=dtype)


def shift_mu(image_tokens: int, scheduler_config: Any) -> float:
    """FLUX's resolution-dependent schedule shift: 0.5 at 256 tokens to 1.15 at 4096, linear."""
    base_len = scheduler_config.get("base_image_seq_len", 256)
    max_len = scheduler_config.get("max_image_seq_len", 4096)
    base_shift = scheduler_config.get("base_shift", 0.5)
    max_shift = scheduler_config.get("max_shift", 1.15)
    slope = (max_shift - base_shift) / (max_len - base_len)
    return float(image_tokens * slope + base_shift - slope * base_len)


@torch.no_grad()
def denoise(
    transformer: Any,
    scheduler: Any,
    injection: IdentityInjection | None,
    noise: torch.Tensor,
    latent_hw: tuple[int, int],
    prompt: PromptEmbedding,
    params: SamplingParams,
    *,
    identity: IdEmbedding | None = None,
    negative: PromptEmbedding | None = None,
    on_step: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Run the Euler flow-matching loop from packed ``noise``; returns packed latents.

    The ID is injected from loop index ``start_step`` on (earlier steps set the layout, later ones the
    face). With true CFG the negative pass runs from ``cfg_start_step`` with the negative prompt and the
    unconditional ID, and the prediction is ``neg + s * (pos - neg)``.
    """
    if params.uses_true_cfg and negative is None:
        raise ValueError("true CFG needs a negative prompt embedding")
    device, dtype = noise.device, noise.dtype
    latents = noise
    ids = image_ids(*latent_hw, device=device, dtype=dtype)
    steps = params.steps
    sigmas = np.linspace(1.0, 1.0 / steps, steps)
    scheduler.set_timesteps(sigmas=sigmas, mu=shift_mu(latents.shape[1], scheduler.config), device=device)
    guidance = None
    if transformer.config.guidance_embeds:
        guidance = torch.full((latents.shape[0],), params.guidance, device=device, dtype=torch.float32)

    def predict(embedding: PromptEmbedding, id_tokens: torch.Tensor | None, t: torch.Tensor) -> torch.Tensor:
        timestep = t.expand(latents.shape[0]).to(dtype) / 1000
        scope = injection.using(id_tokens, params.id_weight) if injection is not None else nullcontext()
        with scope:
            out: torch.Tensor = transformer(
                hidden_states=latents,
                timestep=timestep,
                guidance=guidance,
                pooled_projections=embedding.pooled,
                encoder_hidden_states=embedding.text,
                txt_ids=embedding.text_ids,
                img_ids=ids,
                return_dict=False,
            )[0]
        return out

    for i, t in enumerate(scheduler.timesteps):
        gated = identity if identity is not None and i >= params.start_step else None
        pred = predict(prompt, gated.cond if gated else None, t)
        if params.uses_true_cfg and i >= params.cfg_start_step and negative is not None:
            neg = predict(negative, gated.uncond if gated else None, t)
            pred = neg + params.true_cfg * (pred - neg)
        latents = scheduler.step(pred, t, latents, return_dict=False)[0]
        if on_step is not None:
            on_step(i + 1)
    return latents


@torch.no_grad()
def decode(vae: Any, latents: torch.Tensor, latent_hw: tuple[int, int]) -> torch.Tensor:
    """Packed latents -> images (B, 3, H, W) in [0, 1], float32 on the CPU."""
    x = unpack(latents, *latent_hw)
    x = x / vae.config.scaling_factor + vae.config.shift_factor
    image: torch.Tensor = vae.decode(x.to(vae.dtype), return_dict=False)[0]
    return (image.float() / 2 + 0.5).clamp(0, 1).cpu()
