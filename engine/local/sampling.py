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


@dataclass(frozen=True)
class _Conditioning:
    """One transformer call's inputs that stay fixed for the whole job, made once before the loop."""

    text: torch.Tensor
    pooled: torch.Tensor
    text_ids: torch.Tensor
    guidance: torch.Tensor | None
    id_tokens: torch.Tensor | None  # None: this pass never carries an identity
    cache_name: str


def _conditioning(
    prompts: list[PromptEmbedding],
    ids: list[torch.Tensor] | None,
    guidance: float | None,
    device: torch.device,
    dtype: torch.dtype,
    cache_name: str,
) -> _Conditioning:
    return _Conditioning(
        text=torch.cat([p.text for p in prompts]).to(device, dtype),
        pooled=torch.cat([p.pooled for p in prompts]).to(device, dtype),
        text_ids=prompts[0].text_ids.to(device, dtype),
        guidance=None if guidance is None else torch.full((len(prompts),), guidance, device=device),
        id_tokens=None if ids is None else torch.cat(ids).to(device, dtype),
        cache_name=cache_name,
    )


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
    batch_cfg: bool = True,
    step_cache: bool = False,
) -> torch.Tensor:
    """Run the Euler flow-matching loop from packed ``noise``; returns packed latents.

    The ID is injected from loop index ``start_step`` on (earlier steps set the layout, later ones the
    face). With true CFG the negative pass runs from ``cfg_start_step`` with the negative prompt and the
    unconditional ID, and the prediction is ``neg + s * (pos - neg)``; ``batch_cfg`` runs both passes as
    one batch of two (the same result; one pass over the weights instead of two).

    Everything a step needs is on the device before the loop, so a step issues no host-to-device copy
    and reads nothing back (no sync): the GPU can run ahead of Python and CUDA graphs stay possible.
    ``step_cache`` wraps each call in the transformer's cache context (First-Block Cache, when enabled
    on the transformer); the context changes name when the identity switches on, so the first step with
    an identity is always computed in full.
    """
    if params.uses_true_cfg and negative is None:
        raise ValueError("true CFG needs a negative prompt embedding")
    device, dtype = noise.device, noise.dtype
    latents = noise
    ids = image_ids(*latent_hw, device=device, dtype=dtype)
    steps = params.steps
    sigmas = np.linspace(1.0, 1.0 / steps, steps)
    scheduler.set_timesteps(sigmas=sigmas, mu=shift_mu(latents.shape[1], scheduler.config), device=device)
    # Without a begin index the scheduler finds its first step by value, an .item() sync.
    scheduler.set_begin_index(0)
    timesteps = scheduler.timesteps.to(dtype) / 1000
    guidance = params.guidance if transformer.config.guidance_embeds else None
    injecting = injection is not None and identity is not None and params.id_weight != 0
    weight = IdentityInjection.weight_tensor(params.id_weight, noise) if injecting else None
    ident = identity if injecting else None

    def conditioning(prompts: list[PromptEmbedding], id_list: list[torch.Tensor] | None, name: str) -> _Conditioning:
        return _conditioning(prompts, id_list, guidance, device, dtype, name)

    positive = conditioning([prompt], None, "cond")
    positive_id = conditioning([prompt], [ident.cond], "cond-id") if ident is not None else positive
    negative_pass = negative_id = pair = pair_id = None
    if params.uses_true_cfg and negative is not None:
        negative_pass = conditioning([negative], None, "uncond")
        negative_id = conditioning([negative], [ident.uncond], "uncond-id") if ident is not None else negative_pass
        pair = conditioning([prompt, negative], None, "pair")
        pair_id = conditioning([prompt, negative], [ident.cond, ident.uncond], "pair-id") if ident is not None else pair

    def predict(x: torch.Tensor, c: _Conditioning, index: int) -> torch.Tensor:
        timestep = timesteps[index : index + 1].expand(x.shape[0])
        scope = injection.using(c.id_tokens, weight) if injection is not None else nullcontext()
        cache = transformer.cache_context(c.cache_name) if step_cache else nullcontext()
        with scope, cache:
            out: torch.Tensor = transformer(
                hidden_states=x,
                timestep=timestep,
                guidance=c.guidance,
                pooled_projections=c.pooled,
                encoder_hidden_states=c.text,
                txt_ids=c.text_ids,
                img_ids=ids,
                return_dict=False,
            )[0]
        return out

    for i, t in enumerate(scheduler.timesteps):
        with_id = injecting and i >= params.start_step
        cfg = params.uses_true_cfg and i >= params.cfg_start_step
        if cfg and batch_cfg and pair is not None and pair_id is not None:
            both = predict(torch.cat([latents, latents]), pair_id if with_id else pair, i)
            pred, neg = both.chunk(2)
            pred = neg + params.true_cfg * (pred - neg)
        else:
            pred = predict(latents, positive_id if with_id else positive, i)
            if cfg and negative_pass is not None and negative_id is not None:
                neg = predict(latents, negative_id if with_id else negative_pass, i)
                pred = neg + params.true_cfg * (pred - neg)
        latents = scheduler.step(pred, t, latents, return_dict=False)[0]
        if on_step is not None:
            on_step(i + 1)
    return latents


@torch.no_grad()
def decode(
    vae: Any, latents: torch.Tensor, latent_hw: tuple[int, int], compute_dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Packed latents -> images (B, 3, H, W) in [0, 1], float32 on the CPU.

    As in the reference code the latents go in as float32 and, with a 16-bit ``compute_dtype``, the
    decoder runs under autocast: convolutions in 16 bits, normalisations in float32 (keep the VAE's
    weights in float32 for that; they cost about 0.17 GB more than 16-bit ones).
    """
    x = unpack(latents.float(), *latent_hw)
    x = x / vae.config.scaling_factor + vae.config.shift_factor
    autocast = compute_dtype is not None and compute_dtype != torch.float32
    with torch.autocast(x.device.type, dtype=compute_dtype, enabled=autocast):
        image: torch.Tensor = vae.decode(x.to(vae.dtype), return_dict=False)[0]
    return (image.float() / 2 + 0.5).clamp(0, 1).cpu()
