"""Seconds per FLUX.1-dev + PuLID denoising step on a GPU, against the FLOP floor of the same GPU.

Random full-size weights (the same compute as the real ones), 128 T5 tokens, ID injection active, at
1024x1024 and 896x1152. Prints, for one run of about 3-4 minutes on an H100:

- the bf16 matmul rate measured here and each size's FLOPs per step (torch's flop counter);
- s/step eager and compiled (the engine's own compile: dynamic shapes, ID hooks inside) and their
  ratio to the floor (FLOPs / matmul rate);
- the compile warm-up a worker pays at start (what the first job no longer pays), and whether the
  second size reused the graphs;
- true CFG's cost: one step as a batch of two against one step alone, and per 28-step image;
- peak GPU memory of the denoising step per memory mode (bf16, then fp8 with per-row scales), plus
  the other models' weights counted on the meta device, for the whole job's estimated peak.

Run on a CUDA machine from the repository root: ``python -m benchmarks.engine_gpu``. ``--smoke`` runs
every step of it with tiny models on the CPU (the eager compile backend, weight-only float8) in seconds.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from engine.local.acceleration import compile_blocks, fp8_scheme, quantize_fp8
from engine.local.adapter import AdapterConfig, CrossAttentionConfig, PulidAdapter
from engine.local.idformer import IdFormerConfig
from engine.local.injection import IdentityInjection
from engine.local.sampling import latent_size

FLUX_DEV: dict[str, Any] = {
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
# The models a job also holds besides the transformer and PuLID (text encoders, VAE), built on the meta
# device to count their bytes; EVA02-CLIP-L's visual tower (304M parameters) needs timm, so it is a constant.
T5_XXL: dict[str, Any] = {
    "vocab_size": 32128,
    "d_model": 4096,
    "d_kv": 64,
    "d_ff": 10240,
    "num_layers": 24,
    "num_heads": 64,
    "feed_forward_proj": "gated-gelu",
}
CLIP_L: dict[str, Any] = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
}
EVA_VISUAL_PARAMS = 304_000_000
STEPS_PER_IMAGE = 28


@dataclass(frozen=True)
class Config:
    transformer: dict[str, Any]
    adapter: AdapterConfig
    sizes: tuple[tuple[int, int], ...]  # (width, height); the first one also measures true CFG and memory
    text_tokens: int
    device: str
    dtype: torch.dtype
    compile_backend: str
    matmul_size: int
    timed: int  # passes per timing
    warmup: int


FULL = Config(
    transformer=FLUX_DEV,
    adapter=AdapterConfig(),
    sizes=((1024, 1024), (896, 1152)),
    text_tokens=128,
    device="cuda",
    dtype=torch.bfloat16,
    compile_backend="inductor",
    matmul_size=8192,
    timed=5,
    warmup=2,
)

# One block of each kind (both hooked): the fewest graphs to compile, every code path of the full run.
SMOKE = Config(
    transformer={
        "patch_size": 1,
        "in_channels": 16,
        "num_layers": 1,
        "num_single_layers": 1,
        "attention_head_dim": 16,
        "num_attention_heads": 2,
        "joint_attention_dim": 32,
        "pooled_projection_dim": 32,
        "guidance_embeds": True,
        "axes_dims_rope": (4, 6, 6),
    },
    adapter=AdapterConfig(
        idformer=IdFormerConfig(dim=32, depth=2, dim_head=2, heads=16, num_queries=4, output_dim=16, id_dim=16),
        cross_attention=CrossAttentionConfig(dim=32, kv_dim=16, dim_head=2, heads=16),
        num_double_blocks=1,
        num_single_blocks=1,
    ),
    sizes=((64, 64), (48, 80)),
    text_tokens=8,
    device="cpu",
    dtype=torch.float32,
    compile_backend="eager",
    matmul_size=256,
    timed=1,
    warmup=1,
)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_bytes(device: torch.device) -> int | None:
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


def matmul_tflops(device: torch.device, dtype: torch.dtype, size: int, iters: int = 50) -> float:
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(5):
        a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(iters):
        a @ b
    synchronize(device)
    return 2 * size**3 * iters / (time.perf_counter() - start) / 1e12


@dataclass
class Bench:
    """The hooked transformer with an identity active, and its inputs per size and batch."""

    config: Config
    device: torch.device
    transformer: Any
    injection: IdentityInjection
    id_tokens: torch.Tensor
    weight: torch.Tensor

    def inputs(self, size: tuple[int, int], batch: int) -> dict[str, Any]:
        cfg, dtype, device = self.config.transformer, self.config.dtype, self.device
        h, w = latent_size(size[0], size[1], 8)
        tokens = (h // 2) * (w // 2)
        g = torch.Generator().manual_seed(0)

        def random(*shape: int) -> torch.Tensor:
            return torch.randn(*shape, generator=g).to(device, dtype)

        return {
            "hidden_states": random(batch, tokens, cfg["in_channels"]),
            "encoder_hidden_states": random(batch, self.config.text_tokens, cfg["joint_attention_dim"]),
            "pooled_projections": random(batch, cfg["pooled_projection_dim"]),
            "timestep": torch.full((batch,), 0.5, device=device, dtype=dtype),
            "guidance": torch.full((batch,), 4.0, device=device),
            "img_ids": random(tokens, 3),
            "txt_ids": torch.zeros(self.config.text_tokens, 3, device=device, dtype=dtype),
            "return_dict": False,
        }

    @torch.no_grad()
    def step(self, inputs: dict[str, Any]) -> None:
        batch = inputs["hidden_states"].shape[0]
        with self.injection.using(self.id_tokens.expand(batch, -1, -1), self.weight):
            self.transformer(**inputs)

    def seconds_per_step(self, inputs: dict[str, Any], *, warmup: int | None = None) -> float:
        for _ in range(self.config.warmup if warmup is None else warmup):
            self.step(inputs)
        synchronize(self.device)
        start = time.perf_counter()
        for _ in range(self.config.timed):
            self.step(inputs)
        synchronize(self.device)
        return (time.perf_counter() - start) / self.config.timed

    @torch.no_grad()
    def flops(self, inputs: dict[str, Any]) -> float:
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            self.step(inputs)
        return float(counter.get_total_flops())


def build(config: Config, device: torch.device) -> Bench:
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(config.dtype)
    try:
        with device:
            transformer = FluxTransformer2DModel(**config.transformer).eval()
            adapter = PulidAdapter(config.adapter).eval()
    finally:
        torch.set_default_dtype(previous)
    injection = IdentityInjection(adapter)
    injection.attach(transformer)
    ca = config.adapter
    id_tokens = torch.randn(1, ca.idformer.num_queries, ca.cross_attention.kv_dim, device=device, dtype=config.dtype)
    return Bench(config, device, transformer, injection, id_tokens, IdentityInjection.weight_tensor(1.0, id_tokens))


def other_models_bytes() -> dict[str, int]:
    """Weight bytes of the text encoders and VAE as the engine holds them (VAE in float32)."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    def count(module: torch.nn.Module, bytes_per: int) -> int:
        return sum(p.numel() for p in module.parameters()) * bytes_per

    with torch.device("meta"):
        t5 = T5EncoderModel(T5Config(**T5_XXL))
        clip = CLIPTextModel(CLIPTextConfig(**CLIP_L))
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(128, 256, 512, 512),
            layers_per_block=2,
            latent_channels=16,
            use_quant_conv=False,
            use_post_quant_conv=False,
        )
    return {"T5-XXL": count(t5, 2), "CLIP-L": count(clip, 2), "VAE": count(vae, 4), "EVA": EVA_VISUAL_PARAMS * 2}


def gib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**30:.1f}"


def weights_bytes(module: torch.nn.Module) -> int:
    """Bytes the module's weights take where they live (float8 tensors count their data and scales)."""
    total = 0
    for param in module.parameters():
        inner = [getattr(param, name) for name in ("qdata", "scale") if hasattr(param, name)]
        total += sum(t.numel() * t.element_size() for t in inner) or param.numel() * param.element_size()
    return total


def dynamo_graphs() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def run(config: Config, out: Callable[[str], None] = print) -> None:
    device = torch.device(config.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        out(f"GPU: {torch.cuda.get_device_name(device)}  torch {torch.__version__}")
    else:
        out(f"CPU smoke run (tiny models)  torch {torch.__version__}")
    rate = matmul_tflops(device, config.dtype, config.matmul_size)
    out(f"{config.dtype} matmul rate: {rate:.3g} TFLOP/s")

    started = time.perf_counter()
    bench = build(config, device)
    out(f"built random weights in {time.perf_counter() - started:.1f} s")
    first = config.sizes[0]
    per_size = {size: bench.inputs(size, 1) for size in config.sizes}
    flops = {size: bench.flops(inputs) for size, inputs in per_size.items()}

    def row(name: str, size: tuple[int, int], seconds: float, peak: int | None = None) -> None:
        floor = flops[size] / (rate * 1e12)
        out(
            f"{name:<24} {size[0]}x{size[1]:<5} {seconds:>9.4f} {flops[size] / seconds / 1e12:>8.3g} "
            f"{seconds / floor:>8.2f} {gib(peak):>9}"
        )

    for size in config.sizes:
        floor = flops[size] / (rate * 1e12)
        out(f"{size[0]}x{size[1]}: {flops[size] / 1e12:.3g} TFLOP/step, floor {floor * 1000:.3g} ms/step")
    out(f"{'mode':<24} {'size':<10} {'s/step':>9} {'TFLOP/s':>8} {'x floor':>8} {'peak GiB':>9}")

    # Eager bf16, memory mode bf16 (the transformer and PuLID resident).
    eager: dict[tuple[int, int], float] = {}
    denoise_peak: dict[str, int | None] = {}
    for size in config.sizes:
        reset_peak(device)
        eager[size] = bench.seconds_per_step(per_size[size])
        peak = peak_bytes(device)
        if size == first:
            denoise_peak["bf16"] = peak
        row("eager", size, eager[size], peak)
    pair = bench.inputs(first, 2)
    eager_pair = bench.seconds_per_step(pair)
    row("eager true CFG (x2)", first, eager_pair)

    # Compiled as the engine does it: the warm-up is what a worker pays before its first job.
    graphs_before = dynamo_graphs()
    compile_blocks(bench.transformer, bench.injection, backend=config.compile_backend)
    started = time.perf_counter()
    bench.step(per_size[first])
    bench.step(pair)
    synchronize(device)
    warm_up = time.perf_counter() - started
    graphs_after_warm_up = dynamo_graphs()
    compiled: dict[tuple[int, int], float] = {}
    for size in config.sizes:
        compiled[size] = bench.seconds_per_step(per_size[size])
        row("compiled", size, compiled[size])
    compiled_pair = bench.seconds_per_step(pair)
    row("compiled true CFG (x2)", first, compiled_pair)
    extra = dynamo_graphs() - graphs_after_warm_up
    out(
        f"compile warm-up: {warm_up:.1f} s, {graphs_after_warm_up - graphs_before} graphs; "
        f"graphs compiled after it (other size): {extra}"
    )

    def cfg_cost(single: float, both: float) -> str:
        per_image = (single + (STEPS_PER_IMAGE - 1) * both) / (STEPS_PER_IMAGE * single)
        return f"step x{both / single:.2f}, {STEPS_PER_IMAGE}-step image x{per_image:.2f}"

    eager_cost, compiled_cost = cfg_cost(eager[first], eager_pair), cfg_cost(compiled[first], compiled_pair)
    out(f"true CFG cost: eager {eager_cost}; compiled {compiled_cost}")

    # Memory mode fp8: the same transformer with float8 weights (and activations on 8.9+ GPUs).
    torch._dynamo.reset()
    scheme = fp8_scheme(device)
    layers = quantize_fp8(bench.transformer, scheme)
    reset_peak(device)
    fp8_eager = bench.seconds_per_step(per_size[first])
    denoise_peak["fp8"] = peak_bytes(device)
    row(f"fp8 {scheme} eager", first, fp8_eager, denoise_peak["fp8"])
    compile_blocks(bench.transformer, bench.injection, backend=config.compile_backend)
    fp8_compiled = bench.seconds_per_step(per_size[first], warmup=config.warmup + 1)
    row(f"fp8 {scheme} compiled", first, fp8_compiled)
    out(f"fp8: {layers} linear layers quantised; transformer weights now {gib(weights_bytes(bench.transformer))} GiB")

    others = other_models_bytes()
    out("other models' weights (counted): " + ", ".join(f"{k} {gib(v)} GiB" for k, v in others.items()))
    resident, largest = sum(others.values()), max(others.values())
    bf16_peak, fp8_peak = denoise_peak["bf16"], denoise_peak["fp8"]
    if bf16_peak is not None and fp8_peak is not None:
        out(
            "estimated job peak (measured denoise peak + models resident beside it): "
            f"bf16 {gib(bf16_peak + resident)} GiB, offload {gib(max(bf16_peak, largest))} GiB, "
            f"fp8 {gib(max(fp8_peak, largest + weights_bytes(bench.transformer)))} GiB"
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny models on the CPU: proves every path")
    parser.add_argument("--timed", type=int, default=None, help="passes per timing")
    args = parser.parse_args(argv)
    config = SMOKE if args.smoke else FULL
    if args.timed is not None:
        config = Config(**{**config.__dict__, "timed": args.timed})
    if config.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("engine_gpu.py needs a CUDA GPU (or --smoke)")
    run(config)


if __name__ == "__main__":
    main()
