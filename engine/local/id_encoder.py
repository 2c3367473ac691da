"""From face photos to PuLID ID embeddings: ArcFace + EVA-CLIP features through the IDFormer.

Several photos of one identity are combined in one of two ways (``LocalSettings.multi_photo``):

- ``"mean"`` (default): each photo goes through the IDFormer alone, exactly as in training (5 ID tokens
  and 577 EVA tokens per pass), and the 32x2048 outputs are averaged. The result does not depend on the
  order of the photos, a photo given twice changes nothing, and an odd photo (bad light, a profile)
  moves the result by 1/n of its difference.
- ``"tokens"``: one IDFormer pass sees the 5n ID tokens and n*577 EVA tokens of all photos together.
  The perceiver can weigh the photos against each other, but its input is n times longer than anything
  the released weights were trained on, so the learned queries' attention is spread thinner.

docs/local-engine.md has the measurement behind the default.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import NoFaceError
from engine.local.faces import FaceAnalyzer, FaceParser, whiten_background
from engine.local.idformer import IDFormer
from engine.local.sampling import IdEmbedding

logger = logging.getLogger(__name__)

EVA_IMAGE_SIZE = 336
EVA_MEAN = (0.48145466, 0.4578275, 0.40821073)
EVA_STD = (0.26862954, 0.26130258, 0.27577711)
# The residual stream entering blocks 4, 8, 12, 16 and 20 of 24: outputs of these blocks.
EVA_HIDDEN_BLOCKS = (3, 7, 11, 15, 19)

Strategy = Literal["mean", "tokens"]


class EvaEncoder(Protocol):
    def __call__(self, pixels: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(B, 3, 336, 336) normalised pixels -> (L2-normalised projected CLS (B, 768), 5 hidden states)."""
        ...


# Builds the EVA tower on the CPU; the renderer places it per memory mode.
EvaLoader = Callable[[torch.device, torch.dtype], nn.Module]


class TimmEvaClip(nn.Module):
    """EVA02-CLIP-L-14-336's visual tower, built by timm from the EVA-CLIP checkpoint (needs torchvision).

    timm's EVA accepts EVA-CLIP ``visual.*`` checkpoints; the hidden states are taken with forward hooks
    on the blocks: class token included, no final norm.
    """

    def __init__(self, checkpoint: Path) -> None:
        super().__init__()
        import timm  # type: ignore[import-not-found, unused-ignore]

        self.model = timm.create_model(
            "eva02_large_patch14_clip_336", pretrained=True, pretrained_cfg_overlay={"file": str(checkpoint)}
        )
        self._hidden: list[torch.Tensor] = []
        for index in EVA_HIDDEN_BLOCKS:
            self.model.blocks[index].register_forward_hook(self._keep)

    def _keep(self, module: nn.Module, args: object, output: torch.Tensor) -> None:
        self._hidden.append(output)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        self._hidden = []
        embedding = self.model(pixels)
        hidden, self._hidden = self._hidden, []
        return F.normalize(embedding, dim=-1), hidden


def load_eva_clip(checkpoint: Path) -> EvaLoader:
    def load(device: torch.device, dtype: torch.dtype) -> nn.Module:
        return TimmEvaClip(checkpoint).to(device=device, dtype=dtype).eval()

    return load


@dataclass(frozen=True)
class PhotoFeatures:
    id_cond: torch.Tensor = field(repr=False)  # (1, 1280): raw ArcFace 512 + EVA CLS 768
    hidden: tuple[torch.Tensor, ...] = field(repr=False)  # 5 x (1, 577, 1024)


def eva_pixels(whitened: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(H, W, 3) float [0, 1] -> normalised (1, 3, 336, 336); bicubic without antialias, as in training."""
    x = torch.from_numpy(whitened).permute(2, 0, 1)[None].to(device=device, dtype=torch.float32)
    x = F.interpolate(x, size=(EVA_IMAGE_SIZE, EVA_IMAGE_SIZE), mode="bicubic", align_corners=False)
    mean = torch.tensor(EVA_MEAN, device=device)[:, None, None]
    std = torch.tensor(EVA_STD, device=device)[:, None, None]
    return ((x - mean) / std).to(dtype)


class IdentityEncoder:
    """Face photos (RGB uint8) -> the ID embedding and the unconditional one for true CFG."""

    def __init__(
        self,
        analyzer: FaceAnalyzer,
        parser: FaceParser,
        eva: EvaEncoder,
        idformer: IDFormer,
        *,
        device: torch.device,
        dtype: torch.dtype,
        strategy: Strategy = "mean",
    ) -> None:
        self.analyzer = analyzer
        self.parser = parser
        self.eva = eva
        self.idformer = idformer
        self.device = device
        self.dtype = dtype
        self.strategy = strategy

    @torch.no_grad()
    def features(self, photo: np.ndarray) -> PhotoFeatures:
        face = self.analyzer.analyze(photo)
        whitened = whiten_background(face.aligned, self.parser.parse(face.aligned))
        cls, hidden = self.eva(eva_pixels(whitened, self.device, self.dtype))
        arcface = torch.from_numpy(face.embedding)[None].to(device=self.device, dtype=self.dtype)
        return PhotoFeatures(torch.cat([arcface, cls.to(self.dtype)], dim=-1), tuple(hidden))

    @torch.no_grad()
    def encode(self, photos: Sequence[np.ndarray]) -> IdEmbedding:
        if not photos:
            raise ValueError("an identity needs at least one photo")
        features = []
        for number, photo in enumerate(photos, start=1):
            try:
                features.append(self.features(photo))
            except NoFaceError as exc:
                raise NoFaceError(f"photo {number} of {len(photos)}: {exc.detail}") from exc
        return combine(self.idformer, features, self.strategy)


def _run(idformer: IDFormer, id_cond: torch.Tensor, hidden: Sequence[torch.Tensor]) -> IdEmbedding:
    cond = idformer(id_cond, list(hidden))
    # Zeros in, but not zeros out: biases and learned queries remain, which is what training saw.
    uncond = idformer(torch.zeros_like(id_cond), [torch.zeros_like(h) for h in hidden])
    return IdEmbedding(cond=cond, uncond=uncond)


@torch.no_grad()
def combine(idformer: IDFormer, features: Sequence[PhotoFeatures], strategy: Strategy) -> IdEmbedding:
    """One ID embedding (1, 32, 2048) from one or more photos' features."""
    if strategy == "tokens":
        id_cond = torch.stack([f.id_cond[0] for f in features])[None]  # (1, n, 1280)
        hidden = [torch.cat([f.hidden[g] for f in features], dim=1) for g in range(len(features[0].hidden))]
        return _run(idformer, id_cond, hidden)
    runs = [_run(idformer, f.id_cond, f.hidden) for f in features]
    # Every photo's unconditional embedding is the same (zeros in), so the first one serves.
    return IdEmbedding(cond=torch.stack([r.cond for r in runs]).mean(dim=0), uncond=runs[0].uncond)
