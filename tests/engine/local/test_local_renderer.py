"""The renderer in-process: memory modes, several photos per identity, output formats."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from engine.errors import InvalidInputError
from engine.local.id_encoder import PhotoFeatures, combine
from engine.local.jobs import RenderCancelled, RenderJob
from engine.local.renderer import Placement, decode_photo, encode_image
from tests.engine.local import tiny
from tests.engine.local.face_models import face_photo


def png(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.write_models_dir(tmp_path_factory.mktemp("models"))


def job(**overrides: Any) -> RenderJob:
    values: dict[str, Any] = {
        "prompt": "a portrait in the city",
        "faces": (png(face_photo()),),
        "width": 64,
        "height": 64,
        "steps": 2,
        "guidance": 3.5,
        "id_weight": 1.0,
        "start_step": 0,
        "true_cfg": 1.0,
        "seed": 3,
        "output_format": "png",
    }
    values.update(overrides)
    return RenderJob(**values)


def pixels(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)))


def test_memory_modes_render_the_same_image(models_dir: Path) -> None:
    resident = tiny.tiny_renderer(tiny.tiny_settings(models_dir, memory_mode="bf16"))
    offload = tiny.tiny_renderer(tiny.tiny_settings(models_dir, memory_mode="offload"))
    fp8 = tiny.tiny_renderer(tiny.tiny_settings(models_dir, memory_mode="fp8"))
    assert offload.placement.is_offloaded(offload.transformer)
    assert not fp8.placement.is_offloaded(fp8.transformer) and fp8.placement.is_offloaded(fp8.vae)
    # The blocks' linear weights are stored in float8 with per-row scales (weight-only on a CPU);
    # embedders, norms and the ID cross-attention stay in the compute dtype.
    quantised = fp8.transformer.transformer_blocks[0].attn.to_q.weight
    assert quantised.qdata.dtype == torch.float8_e4m3fn and quantised.scale.shape == (quantised.shape[0], 1)
    assert fp8.transformer.x_embedder.weight.dtype == torch.float32
    assert fp8.adapter.pulid_ca[0].to_q.weight.dtype == torch.float32
    a = resident.render(job())[0]
    b = offload.render(job())[0]
    c = fp8.render(job())[0]
    assert a.data == b.data  # offloading moves weights, it never changes them
    assert np.abs(pixels(a.data).astype(int) - pixels(c.data).astype(int)).mean() < 40


def test_true_cfg_id_weight_and_start_step_through_the_renderer(models_dir: Path) -> None:
    renderer = tiny.tiny_renderer(tiny.tiny_settings(models_dir))
    base = renderer.render(job())[0].data
    assert renderer.render(job(true_cfg=3.0, negative_prompt="blurry"))[0].data != base
    assert renderer.render(job(true_cfg=3.0))[0].data != base
    plain = renderer.render(job(id_weight=0.0, faces=(b"ignored when the ID is off",)))[0].data
    assert renderer.render(job(start_step=2))[0].data == plain
    assert plain != base


def test_renderer_checks_size_and_stops_when_asked(models_dir: Path) -> None:
    renderer = tiny.tiny_renderer(tiny.tiny_settings(models_dir))
    with pytest.raises(InvalidInputError, match="multiples of 16"):
        renderer.render(job(width=72))
    with pytest.raises(RenderCancelled):
        renderer.render(job(), should_stop=lambda: True)
    calls = [0]

    def stop_after_first_step() -> bool:
        calls[0] += 1
        return calls[0] > 2

    with pytest.raises(RenderCancelled):
        renderer.render(job(num_images=2), should_stop=stop_after_first_step)


def test_multi_photo_strategies(models_dir: Path) -> None:
    settings = tiny.tiny_settings(models_dir)
    renderer = tiny.tiny_renderer(settings)
    encoder = renderer.identity
    photos = [face_photo(seed=s, tone=t) for s, t in ((1, (200, 170, 150)), (2, (190, 160, 140)))]
    features = [encoder.features(p) for p in photos]
    assert features[0].id_cond.shape == (1, 512 + tiny.TINY_EVA_EMBED)
    idformer = renderer.adapter.pulid_encoder
    single = combine(idformer, features[:1], "mean")
    mean = combine(idformer, features, "mean")
    tokens = combine(idformer, features, "tokens")
    for embedding in (single, mean, tokens):
        assert embedding.cond.shape == (1, 4, 16) and embedding.uncond.shape == (1, 4, 16)
    # "mean": order does not matter and a repeated photo changes nothing.
    torch.testing.assert_close(combine(idformer, features[::-1], "mean").cond, mean.cond)
    torch.testing.assert_close(combine(idformer, [features[0]] * 3, "mean").cond, single.cond)
    # "tokens": one pass over all photos, also order-free, but a repeated photo shifts the result.
    torch.testing.assert_close(combine(idformer, features[::-1], "tokens").cond, tokens.cond)
    assert (combine(idformer, [features[0]] * 3, "tokens").cond - single.cond).abs().max() > 1e-4
    # The unconditional embedding is the IDFormer on zeros: never zero itself.
    assert single.uncond.abs().sum() > 0
    with pytest.raises(ValueError, match="at least one photo"):
        encoder.encode([])
    tokens_renderer = tiny.tiny_renderer(tiny.tiny_settings(models_dir, multi_photo="tokens"))
    assert tokens_renderer.identity.strategy == "tokens"
    two = job(faces=tuple(png(p) for p in photos))
    assert tokens_renderer.render(two)[0].data != renderer.render(two)[0].data


def test_photo_decoding_downscales_and_rejects_garbage() -> None:
    big = np.zeros((1500, 3000, 3), dtype=np.uint8)
    assert decode_photo(png(big)).shape == (512, 1024, 3)
    with pytest.raises(InvalidInputError):
        decode_photo(b"GIF89a nonsense")


def test_image_encoding_formats() -> None:
    image = torch.rand(3, 32, 48)
    for fmt, content_type in (("jpeg", "image/jpeg"), ("png", "image/png"), ("webp", "image/webp")):
        out = encode_image(image, fmt, 90)
        assert out.content_type == content_type and (out.width, out.height) == (48, 32)
    with pytest.raises(InvalidInputError):
        encode_image(image, "bmp", 90)


class RecordingLinear(torch.nn.Linear):
    def __init__(self) -> None:
        super().__init__(2, 2)
        self.moves: list[str] = []

    def to(self, *args: Any, **kwargs: Any) -> Any:
        self.moves.append(str(args[0]))
        return self


def test_placement_moves_only_offloaded_modules() -> None:
    kept, moved = RecordingLinear(), RecordingLinear()
    placement = Placement(torch.device("cuda"), [moved])
    with placement.use(kept, moved, "not a module"):
        assert moved.moves == ["cuda"]
    assert moved.moves == ["cuda", "cpu"] and kept.moves == []


def test_photo_features_are_frozen() -> None:
    features = PhotoFeatures(torch.zeros(1, 2), (torch.zeros(1),))
    with pytest.raises(AttributeError):
        features.id_cond = torch.ones(1)  # type: ignore[misc]


def test_sixteen_bit_compute_keeps_the_vae_in_float32(models_dir: Path) -> None:
    renderer = tiny.tiny_renderer(tiny.tiny_settings(models_dir, compute_dtype="bfloat16"))
    assert renderer.vae.dtype == torch.float32 and renderer.transformer.dtype == torch.bfloat16
    image = pixels(renderer.render(job())[0].data)
    assert image.shape == (64, 64, 3) and image.std() > 0


def test_step_cache_setting_turns_the_cache_on_and_compilation_off(models_dir: Path) -> None:
    renderer = tiny.tiny_renderer(tiny.tiny_settings(models_dir, step_cache=0.1, compile=True))
    assert renderer.step_cache and renderer.transformer.is_cache_enabled
    # Compiling was asked for but the cache's per-step decision cannot be compiled as one graph.
    assert not hasattr(renderer.transformer.transformer_blocks[0], "_compiled_call_impl") or (
        renderer.transformer.transformer_blocks[0]._compiled_call_impl is None
    )
    assert pixels(renderer.render(job())[0].data).shape == (64, 64, 3)
