"""How the transformer runs fast on a GPU: attention kernel, torch.compile of its blocks, scaled float8.

Everything here is decided from the device and what is installed, and each choice can be overridden
in the settings. The CPU paths (tests) run the same code with the eager compile backend.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal

import torch

from engine.local.injection import IdentityInjection

logger = logging.getLogger(__name__)

# Fastest first. On Hopper FlashAttention-3 (when built) and cuDNN's fused attention beat
# FlashAttention-2; elsewhere FlashAttention-2 (when installed) beats torch's own choice.
HOPPER_ATTENTION = ("_flash_3", "_native_cudnn", "native")
CUDA_ATTENTION = ("flash", "native")

# Graphs per batch size once the identity path is static: hooked double blocks (the first one apart:
# its input is a view of the embedder's output), unhooked double blocks, and two stride variants of
# each single-block kind (a hooked block returns a fresh tensor, an unhooked one a view): 7, of which
# the 4 hooked ones share diffusers' hook code object. True CFG's batch of two doubles that, to exactly
# dynamo's default limit of 8 per code object; the limit here leaves room above it.
RECOMPILE_LIMIT = 16


def attention_usable(name: str) -> bool:
    """Whether diffusers' attention dispatcher can run ``name`` here (its package is installed)."""
    from diffusers.models.attention_dispatch import AttentionBackendName, _check_attention_backend_requirements

    try:
        _check_attention_backend_requirements(AttentionBackendName(name))
    except (RuntimeError, ValueError):
        return False
    return True


def pick_attention_backend(
    device: torch.device, capability: tuple[int, int] | None, usable: Callable[[str], bool] = attention_usable
) -> str | None:
    """The fastest attention backend for ``device``; None leaves diffusers' default (torch SDPA)."""
    if device.type != "cuda" or capability is None:
        return None
    preference = HOPPER_ATTENTION if capability[0] == 9 else CUDA_ATTENTION
    return next((name for name in preference if usable(name)), None)


def set_attention(transformer: Any, setting: str, device: torch.device) -> str | None:
    """Apply the ``attention_backend`` setting ("auto" or a diffusers backend name); returns the one set."""
    if setting == "auto":
        capability = torch.cuda.get_device_capability(device) if device.type == "cuda" else None
        name = pick_attention_backend(device, capability)
    else:
        name = setting
    if name is not None:
        transformer.set_attention_backend(name)
        logger.info("attention backend: %s", name)
    return name


def compile_blocks(
    transformer: Any, injection: IdentityInjection, *, backend: str | Callable[..., Any] = "inductor"
) -> None:
    """``torch.compile`` each transformer block once per kind, with the ID cross-attention inside.

    Shapes are dynamic from the first call (``dynamic=True``), so every supported image size and
    prompt length shares one graph per block kind: no recompile when a user picks a new size. Batch
    sizes 1 and 2 (true CFG) stay separate graphs, as dynamo specialises size-1 dimensions.
    ``fullgraph=True`` makes a graph break an error instead of a silent slowdown.
    """
    import torch.fx.experimental._config as fx_config

    injection.keep_graph_static()
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    # Dynamo gives input dimensions of equal size one symbol ("duck shapes"): the default 128 text
    # tokens would be tied to FLUX's head size of 128, and every other prompt length would recompile.
    fx_config.use_duck_shape = False
    transformer.compile_repeated_blocks(fullgraph=True, dynamic=True, backend=backend)


Fp8Scheme = Literal["dynamic", "weight-only"]


def fp8_scheme(device: torch.device) -> Fp8Scheme:
    """Float8 activations and weights where the GPU multiplies in float8 (compute capability 8.9 and up:
    Ada, Hopper, Blackwell); weight-only elsewhere, which saves memory but not time."""
    if device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9):
        return "dynamic"
    return "weight-only"


def quantize_fp8(transformer: Any, scheme: Fp8Scheme, *, device: torch.device | None = None) -> int:
    """Store the linear weights of the transformer blocks in float8 with per-row scales (torchao).

    ``dynamic`` also quantises each activation row on the fly and multiplies in float8 (torch's scaled
    matmul); ``weight-only`` dequantises the weights for a 16-bit matmul. The embedders and the output
    projection stay 16-bit (small, and where the error would matter most); the ID cross-attentions live
    outside the transformer and are never quantised. Returns the number of layers quantised.
    """
    from torchao.quantization import (  # type: ignore[import-untyped, import-not-found, unused-ignore]
        Float8DynamicActivationFloat8WeightConfig,
        Float8WeightOnlyConfig,
        PerRow,
        quantize_,
    )

    config: Any = (
        Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())
        if scheme == "dynamic"
        else Float8WeightOnlyConfig()
    )
    quantised: list[str] = []

    def in_blocks(module: torch.nn.Module, name: str) -> bool:
        chosen = isinstance(module, torch.nn.Linear) and name.startswith(
            ("transformer_blocks.", "single_transformer_blocks.")
        )
        if chosen:
            quantised.append(name)
        return chosen

    # With ``device``, each layer moves there before it is quantised: the 16-bit weights never all sit on it.
    quantize_(transformer, config, filter_fn=in_blocks, device=device)
    logger.info("float8 (%s, per-row scales): %d linear layers", scheme, len(quantised))
    return len(quantised)
