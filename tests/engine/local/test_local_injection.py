"""The hooked transformer equals a hand-written loop that inserts the ID cross-attention."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from engine.local.injection import IdentityInjection
from tests.engine.local import tiny


def inputs(seed: int = 0) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    tokens, text = 16, 6
    return {
        "hidden_states": torch.randn(1, tokens, 16, generator=g),
        "encoder_hidden_states": torch.randn(1, text, 32, generator=g),
        "pooled_projections": torch.randn(1, 32, generator=g),
        "timestep": torch.tensor([0.7]),
        "guidance": torch.tensor([3.5]),
        "img_ids": torch.randn(tokens, 3, generator=g),
        "txt_ids": torch.zeros(text, 3),
    }


def oracle(transformer: Any, adapter: Any, id_tokens: torch.Tensor, weight: float, x: dict[str, Any]) -> Any:
    """FLUX's forward written out, with img += w * CA(id, img) after double i%2==0 and single i%4==0."""
    hs = transformer.x_embedder(x["hidden_states"])
    temb = transformer.time_text_embed(x["timestep"] * 1000, x["guidance"] * 1000, x["pooled_projections"])
    ehs = transformer.context_embedder(x["encoder_hidden_states"])
    rope = transformer.pos_embed(torch.cat([x["txt_ids"], x["img_ids"]], dim=0))
    ca = 0
    for i, block in enumerate(transformer.transformer_blocks):
        ehs, hs = block(hidden_states=hs, encoder_hidden_states=ehs, temb=temb, image_rotary_emb=rope)
        if i % 2 == 0:
            hs = hs + weight * adapter.pulid_ca[ca](id_tokens, hs)
            ca += 1
    for i, block in enumerate(transformer.single_transformer_blocks):
        ehs, hs = block(hidden_states=hs, encoder_hidden_states=ehs, temb=temb, image_rotary_emb=rope)
        if i % 4 == 0:
            hs = hs + weight * adapter.pulid_ca[ca](id_tokens, hs)
            ca += 1
    assert ca == len(adapter.pulid_ca)
    return transformer.proj_out(transformer.norm_out(hs, temb))


@torch.no_grad()
def test_hooked_transformer_matches_oracle() -> None:
    transformer = tiny.tiny_transformer()
    adapter = tiny.tiny_adapter()
    id_tokens = torch.randn(1, 4, 16, generator=torch.Generator().manual_seed(5))
    x = inputs()
    expected = oracle(transformer, adapter, id_tokens, 1.3, x)
    base = transformer(**x, return_dict=False)[0]

    injection = IdentityInjection(adapter)
    injection.attach(transformer)
    with injection.using(id_tokens, torch.tensor(1.3)):
        got = transformer(**x, return_dict=False)[0]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    assert (got - base).abs().max() > 1e-3  # the identity really changed the output

    # Outside `using`, and after detaching, the transformer is plain FLUX again, bit for bit.
    assert torch.equal(transformer(**x, return_dict=False)[0], base)
    injection.detach()
    with injection.using(id_tokens, torch.tensor(1.3)):
        assert torch.equal(transformer(**x, return_dict=False)[0], base)


@torch.no_grad()
def test_zero_weight_is_plain_flux() -> None:
    transformer = tiny.tiny_transformer()
    injection = IdentityInjection(tiny.tiny_adapter())
    injection.attach(transformer)
    x = inputs()
    base = transformer(**x, return_dict=False)[0]
    injection.activate(torch.randn(1, 4, 16), IdentityInjection.weight_tensor(0.0, base))
    assert torch.equal(transformer(**x, return_dict=False)[0], base)
    with injection.using(None, IdentityInjection.weight_tensor(1.0, base)):
        assert not injection.is_active


def test_attach_checks_sizes_and_refuses_twice() -> None:
    transformer = tiny.tiny_transformer()
    injection = IdentityInjection(tiny.tiny_adapter())
    injection.attach(transformer)
    with pytest.raises(RuntimeError, match="already attached"):
        injection.attach(transformer)
    config = dict(tiny.TRANSFORMER_CONFIG, num_layers=5)
    from diffusers import FluxTransformer2DModel

    with torch.device("meta"):
        bigger = FluxTransformer2DModel(**config)
    with pytest.raises(ValueError, match="needs 5"):
        IdentityInjection(tiny.tiny_adapter()).attach(bigger)
