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
    # while it runs; fp8: transformer weights stored in float8 (computed in compute_dtype) plus offload
    # of the text encoders and VAE.
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
    compile: bool = False
    startup_timeout_s: float = Field(900.0, gt=0)
    cancel_grace_s: float = Field(10.0, ge=0, description="wait for a cancelled render to stop before killing")
