"""Parts that need torchvision (timm's EVA, facexlib) or CUDA; skipped elsewhere by conftest."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.local import weights
from engine.local.acceleration import compile_blocks

pytestmark = pytest.mark.gpu

MODELS = Path(os.environ.get("LIKENESS_TEST_MODELS_DIR", "data/models"))


def test_timm_eva_clip_gives_cls_and_five_hidden_states(tmp_path: Path) -> None:
    import timm

    from engine.local.id_encoder import TimmEvaClip

    # Random weights saved the way EVA-CLIP ships them (visual tower under "visual.", a text tower
    # beside it), converted as the download does: checks the conversion, the wiring and the shapes.
    state = timm.create_model("eva02_large_patch14_clip_336", pretrained=False).state_dict()
    source = tmp_path / "eva.pt"
    torch.save({**{f"visual.{k}": v for k, v in state.items()}, "text.weight": torch.zeros(2)}, source)
    checkpoint = tmp_path / "eva.visual.safetensors"
    weights.convert_eva_checkpoint(source, checkpoint)
    eva = TimmEvaClip(checkpoint).cuda().eval()
    with torch.no_grad():
        cls, hidden = eva(torch.randn(2, 3, 336, 336, device="cuda"))
    assert cls.shape == (2, 768)
    torch.testing.assert_close(cls.norm(dim=-1), torch.ones(2, device="cuda"))
    assert [tuple(h.shape) for h in hidden] == [(2, 577, 1024)] * 5


@pytest.mark.skipif(not (MODELS / weights.FACE_PARSER_DIR).is_dir(), reason="needs the downloaded face parser")
def test_bisenet_parser_labels_an_aligned_face() -> None:
    from engine.local.faces import BiSeNetParser

    parser = BiSeNetParser(MODELS / weights.FACE_PARSER_DIR, device="cuda")
    labels = parser.parse(np.full((512, 512, 3), 128, dtype=np.uint8))
    assert labels.shape == (512, 512) and labels.min() >= 0 and labels.max() < 19


def test_compiled_hooked_transformer_matches_eager() -> None:
    from engine.local.injection import IdentityInjection
    from tests.engine.local import tiny

    transformer = tiny.tiny_transformer().cuda()
    injection = IdentityInjection(tiny.tiny_adapter().cuda())
    injection.attach(transformer)
    g = torch.Generator().manual_seed(0)
    x = {
        "hidden_states": torch.randn(1, 16, 16, generator=g).cuda(),
        "encoder_hidden_states": torch.randn(1, 6, 32, generator=g).cuda(),
        "pooled_projections": torch.randn(1, 32, generator=g).cuda(),
        "timestep": torch.tensor([0.5]).cuda(),
        "guidance": torch.tensor([3.5]).cuda(),
        "img_ids": torch.randn(16, 3, generator=g).cuda(),
        "txt_ids": torch.zeros(6, 3).cuda(),
    }
    id_tokens = torch.randn(1, 4, 16, generator=g).cuda()
    with torch.no_grad(), injection.using(id_tokens, torch.ones((), device="cuda")):
        eager = transformer(**x, return_dict=False)[0]
    # The engine's own compile, with inductor: dynamic shapes, ID hooks inside.
    compile_blocks(transformer, injection)
    with torch.no_grad(), injection.using(id_tokens, torch.ones((), device="cuda")):
        compiled = transformer(**x, return_dict=False)[0]
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not (MODELS / weights.FACE_PARSER_DIR).is_dir(), reason="needs the downloaded face models")
def test_retinaface_fallback_detector_loads_and_reports_landmarks() -> None:
    from engine.local.faces import RetinaFaceDetector

    detector = RetinaFaceDetector(MODELS / weights.FACE_PARSER_DIR, device="cuda")
    assert detector.detect(np.zeros((256, 256, 3), dtype=np.uint8)) == []


def test_float8_on_this_gpu_stays_within_bf16_rounding() -> None:
    """The scheme this GPU gets (float8 matmuls on 8.9+), on the CPU test's block, run on the GPU."""
    import copy

    from engine.local.acceleration import fp8_scheme, quantize_fp8
    from tests.engine.local.test_local_acceleration import Blocks, flux_block, image_out, relative

    block, inputs = flux_block()
    bf16 = copy.deepcopy(block).to("cuda", torch.bfloat16)
    inputs = {k: tuple(t.cuda() for t in v) if isinstance(v, tuple) else v.cuda() for k, v in inputs.items()}
    reference = image_out(bf16, inputs, torch.bfloat16)
    quantised = copy.deepcopy(bf16)
    quantize_fp8(Blocks(quantised), fp8_scheme(torch.device("cuda")))
    assert relative(image_out(quantised, inputs, torch.bfloat16), reference, reference) < 0.005
