"""Seconds per FLUX.1-dev + PuLID denoising step on a GPU, against the FLOP floor of the same GPU.

Random full-size weights (same compute as the real ones), 1024x1024 (4096 image tokens), 128 T5 tokens,
batch 1, ID injection active. Run on a CUDA machine from the repository root:
``python -m benchmarks.engine_gpu [--steps N]``.
The floor is the step's FLOPs (counted by torch's flop counter, about 69 TFLOP) divided by the bf16
matmul rate measured here; "x floor" is seconds per step over that floor (target: within 1.6x compiled).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from engine.local.adapter import PulidAdapter
from engine.local.injection import IdentityInjection

FLUX_DEV = {
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
IMAGE_TOKENS = 4096
TEXT_TOKENS = 128


def matmul_tflops(size: int = 8192, iters: int = 50) -> float:
    a = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    for _ in range(5):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        a @ b
    torch.cuda.synchronize()
    return 2 * size**3 * iters / (time.perf_counter() - start) / 1e12


def build() -> tuple[Any, IdentityInjection, dict[str, torch.Tensor]]:
    from diffusers import FluxTransformer2DModel

    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        transformer = FluxTransformer2DModel(**FLUX_DEV).eval()
        adapter = PulidAdapter().eval()
    torch.set_default_dtype(torch.float32)
    injection = IdentityInjection(adapter)
    injection.attach(transformer)
    injection.activate(torch.randn(1, 32, 2048, device="cuda", dtype=torch.bfloat16), 1.0)
    bf16 = {"device": "cuda", "dtype": torch.bfloat16}
    inputs = {
        "hidden_states": torch.randn(1, IMAGE_TOKENS, 64, **bf16),
        "encoder_hidden_states": torch.randn(1, TEXT_TOKENS, 4096, **bf16),
        "pooled_projections": torch.randn(1, 768, **bf16),
        "timestep": torch.full((1,), 0.5, **bf16),
        "guidance": torch.full((1,), 4.0, device="cuda"),
        "img_ids": torch.randn(IMAGE_TOKENS, 3, **bf16),
        "txt_ids": torch.zeros(TEXT_TOKENS, 3, **bf16),
    }
    return transformer, injection, inputs


@torch.no_grad()
def step_flops(transformer: Any, inputs: dict[str, torch.Tensor]) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        transformer(**inputs, return_dict=False)
    return float(counter.get_total_flops())


@torch.no_grad()
def seconds_per_step(transformer: Any, inputs: dict[str, torch.Tensor], steps: int, warmup: int) -> float:
    for _ in range(warmup):
        transformer(**inputs, return_dict=False)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        transformer(**inputs, return_dict=False)
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("engine_gpu.py needs a CUDA GPU")
    torch.backends.cuda.matmul.allow_tf32 = True
    rate = matmul_tflops()
    transformer, _injection, inputs = build()
    flops = step_flops(transformer, inputs)
    floor = flops / (rate * 1e12)
    rows = []
    torch.cuda.reset_peak_memory_stats()
    eager = seconds_per_step(transformer, inputs, args.steps, warmup=2)
    rows.append(("bf16 eager", eager, torch.cuda.max_memory_allocated()))
    if not args.no_compile:
        transformer.compile_repeated_blocks(fullgraph=True)
        torch.cuda.reset_peak_memory_stats()
        compiled = seconds_per_step(transformer, inputs, args.steps, warmup=3)
        rows.append(("bf16 torch.compile", compiled, torch.cuda.max_memory_allocated()))
    print(f"GPU: {torch.cuda.get_device_name()}  torch {torch.__version__}")
    print(f"bf16 matmul rate: {rate:.0f} TFLOP/s; step: {flops / 1e12:.2f} TFLOP")
    print(f"floor: {floor * 1000:.1f} ms/step")
    print(f"{'mode':<20} {'s/step':>8} {'TFLOP/s':>8} {'x floor':>8} {'peak GiB':>9}")
    for name, seconds, peak in rows:
        achieved = flops / seconds / 1e12
        print(f"{name:<20} {seconds:>8.4f} {achieved:>8.0f} {seconds / floor:>8.2f} {peak / 2**30:>9.1f}")


if __name__ == "__main__":
    main()
