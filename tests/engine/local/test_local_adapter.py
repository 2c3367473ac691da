"""The PuLID adapter at full size: key layout of the released file and the 20 cross-attention calls."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.local.adapter import (
    AdapterConfig,
    InsertionPlan,
    PulidAdapter,
    config_from_shapes,
    read_shapes,
)
from engine.local.injection import IdentityInjection
from tests.engine.local import tiny

# The released pulid_flux_v0.9.1.safetensors, as (key pattern -> shape), expanded below.
ENCODER_LAYER = {
    "0.norm1.weight": (1024,),
    "0.norm1.bias": (1024,),
    "0.norm2.weight": (1024,),
    "0.norm2.bias": (1024,),
    "0.to_q.weight": (1024, 1024),
    "0.to_kv.weight": (2048, 1024),
    "0.to_out.weight": (1024, 1024),
    "1.0.weight": (1024,),
    "1.0.bias": (1024,),
    "1.1.weight": (4096, 1024),
    "1.3.weight": (1024, 4096),
}
CA = {
    "norm1.weight": (2048,),
    "norm1.bias": (2048,),
    "norm2.weight": (3072,),
    "norm2.bias": (3072,),
    "to_q.weight": (2048, 3072),
    "to_kv.weight": (4096, 2048),
    "to_out.weight": (3072, 2048),
}


def official_shapes() -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {
        "pulid_encoder.latents": (1, 32, 1024),
        "pulid_encoder.proj_out": (1024, 2048),
    }
    mlp_in = {"id_embedding_mapping": 1280, **{f"mapping_{i}": 1024 for i in range(5)}}
    for name, in_dim in mlp_in.items():
        out = 5120 if name == "id_embedding_mapping" else 1024
        shapes[f"pulid_encoder.{name}.0.weight"] = (1024, in_dim)
        shapes[f"pulid_encoder.{name}.0.bias"] = (1024,)
        shapes[f"pulid_encoder.{name}.3.weight"] = (1024, 1024)
        shapes[f"pulid_encoder.{name}.3.bias"] = (1024,)
        shapes[f"pulid_encoder.{name}.6.weight"] = (out, 1024)
        shapes[f"pulid_encoder.{name}.6.bias"] = (out,)
        for ln in (1, 4):
            shapes[f"pulid_encoder.{name}.{ln}.weight"] = (1024,)
            shapes[f"pulid_encoder.{name}.{ln}.bias"] = (1024,)
    for layer in range(10):
        for key, shape in ENCODER_LAYER.items():
            shapes[f"pulid_encoder.layers.{layer}.{key}"] = shape
    for index in range(20):
        for key, shape in CA.items():
            shapes[f"pulid_ca.{index}.{key}"] = shape
    return shapes


def meta_adapter() -> PulidAdapter:
    with torch.device("meta"):
        return PulidAdapter()


def test_full_size_state_dict_is_the_released_key_table() -> None:
    state = meta_adapter().state_dict()
    expected = official_shapes()
    assert len(expected) == 312
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    assert sum(v.numel() for v in state.values()) == 571_033_600


def test_released_plan_is_ten_double_and_ten_single_blocks() -> None:
    plan = AdapterConfig().plan
    assert plan.double_blocks == tuple(range(0, 19, 2))
    assert plan.single_blocks == tuple(range(0, 38, 4))
    assert plan.count == 20
    assert InsertionPlan.for_blocks(3, 5).count == 4


def test_synthetic_file_with_released_names_loads_strictly(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    # Small tensors under the released names are enough to prove the names; the shapes are proven above.
    adapter = tiny.tiny_adapter()
    state = {k: torch.randn(v.shape).to(torch.bfloat16) for k, v in adapter.state_dict().items()}
    path = tmp_path / "pulid.safetensors"
    save_file(state, str(path))

    config = config_from_shapes(read_shapes(path), num_double_blocks=3, num_single_blocks=5)
    assert config == tiny.tiny_adapter_config()
    loaded = PulidAdapter(config)
    loaded.load_file(path)
    for key, value in loaded.state_dict().items():
        assert value.dtype == torch.float32
        assert torch.equal(value, state[key].float()), key


def test_config_from_released_shapes_is_the_default() -> None:
    shapes = official_shapes()
    assert config_from_shapes(shapes, num_double_blocks=19, num_single_blocks=38) == AdapterConfig()
    with pytest.raises(ValueError, match="needs 4"):
        config_from_shapes(shapes, num_double_blocks=3, num_single_blocks=5)


def test_missing_or_extra_key_fails_strict_load(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in tiny.tiny_adapter().state_dict().items()}
    state["pulid_ca.0.extra"] = torch.zeros(1)
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path))
    with pytest.raises(RuntimeError, match="Unexpected key"):
        PulidAdapter(tiny.tiny_adapter_config()).load_file(path)


def test_full_size_transformer_calls_twenty_cross_attentions_with_reference_shapes() -> None:
    from diffusers import FluxTransformer2DModel

    with torch.device("meta"):
        transformer = FluxTransformer2DModel(**tiny.FULL_TRANSFORMER_CONFIG)
        adapter = PulidAdapter()
    calls: list[tuple[int, tuple[int, ...], tuple[int, ...]]] = []
    for index, ca in enumerate(adapter.pulid_ca):
        ca.register_forward_hook(
            lambda m, args, out, i=index: calls.append((i, tuple(args[0].shape), tuple(args[1].shape)))
        )
    injection = IdentityInjection(adapter)
    injection.attach(transformer)
    tokens, text = 4096, 128
    with torch.device("meta"):
        id_tokens = torch.empty(1, 32, 2048)
        with injection.using(id_tokens, torch.ones(())):
            out = transformer(
                hidden_states=torch.empty(1, tokens, 64),
                encoder_hidden_states=torch.empty(1, text, 4096),
                pooled_projections=torch.empty(1, 768),
                timestep=torch.empty(1),
                guidance=torch.empty(1),
                img_ids=torch.empty(tokens, 3),
                txt_ids=torch.empty(text, 3),
                return_dict=False,
            )[0]
    assert out.shape == (1, tokens, 64)
    assert [c[0] for c in calls] == list(range(20))
    assert all(c[1:] == ((1, 32, 2048), (1, tokens, 3072)) for c in calls)
