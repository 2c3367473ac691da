"""Settings of the local PuLID-FLUX engine (composed into the app settings as ``LIKENESS_LOCAL__*``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MemoryMode = Literal["bf16", "offload", "fp8"]


class LocalSettings(BaseModel):
    """How the local engine runs. ``models_dir`` None means ``<data dir>/models``, decided by the caller."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = False
    models_dir: Path | None = None
    # bf16: every model resident on the GPU (about 36 GB); offload: each model moved to the GPU only
    # while it runs; fp8: the transformer blocks' linear weights in float8 with per-row scales (float8
    # matmuls on compute capability 8.9+, weight-only elsewhere) plus offload of the text encoders and VAE.
    memory_mode: MemoryMode = "bf16"
    device: str = "cuda"
    face_device: Literal["cpu", "cuda"] = "cuda"
    # float16 for GPUs without bfloat16 (pre-Ampere); float32 only for CPU tests.
    compute_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    # How several photos of one identity are combined: "mean" averages per-photo ID embeddings,
    # "tokens" feeds every photo's ID tokens to one IDFormer pass (see docs/local-engine.md).
    multi_photo: Literal["mean", "tokens"] = "mean"
    det_size: int = Field(640, ge=64)
    min_face_px: int = Field(64, ge=1, description="smallest accepted face (shorter side of its box)")
    max_sequence_length: int = Field(128, ge=1, le=512)
    # torch.compile of the transformer blocks; "auto" compiles on CUDA. The engine compiles and warms up
    # while it loads, so the first job does not pay for it (docs/local-engine.md).
    compile: bool | Literal["auto"] = "auto"
    # diffusers attention backend ("flash", "_flash_3", "_native_cudnn", "native", ...); "auto" picks the
    # fastest one installed for the GPU.
    attention_backend: str = "auto"
    # First-Block Cache: a step reuses the previous step's output of all blocks after the first when the
    # first block's output changed by less than this fraction; 0 (default) computes every step in full.
    step_cache: float = Field(0.0, ge=0, le=1)
    startup_timeout_s: float = Field(900.0, gt=0)
    cancel_grace_s: float = Field(10.0, ge=0, description="wait for a cancelled render to stop before killing")
