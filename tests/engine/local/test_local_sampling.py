"""The denoise loop: ID gating, true CFG's negative pass, reproducible seeds, VAE decode."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from engine.local.injection import IdentityInjection
from engine.local.sampling import (
    IdEmbedding,
    PromptEmbedding,
    SamplingParams,
    TextEncoders,
    decode,
    denoise,
    encode_prompt,
    initial_noise,
    latent_size,
    pack,
    unpack,
)
from tests.engine.local import tiny

HW = latent_size(32, 32, 2)  # 32x32 pixels with the tiny VAE (scale 2) -> 16x16 latent, 64 tokens


def prompt(seed: int = 0) -> PromptEmbedding:
    g = torch.Generator().manual_seed(seed)
    return PromptEmbedding(torch.randn(1, 6, 32, generator=g), torch.randn(1, 32, generator=g), torch.zeros(6, 3))


def identity(seed: int) -> IdEmbedding:
    g = torch.Generator().manual_seed(seed)
    return IdEmbedding(torch.randn(1, 4, 16, generator=g), torch.randn(1, 4, 16, generator=g))


def run(
    params: SamplingParams,
    *,
    ident: IdEmbedding | None,
    hooked: bool = True,
    seed: int = 7,
    negative: PromptEmbedding | None = None,
    transformer: Any = None,
    injection: IdentityInjection | None = None,
    batch_cfg: bool = True,
    step_cache: bool = False,
) -> torch.Tensor:
    transformer = transformer if transformer is not None else tiny.tiny_transformer()
    if hooked and injection is None:
        injection = IdentityInjection(tiny.tiny_adapter())
        injection.attach(transformer)
    noise = initial_noise(seed, 4, *HW, device=torch.device("cpu"), dtype=torch.float32)
    return denoise(
        transformer,
        tiny.tiny_scheduler(),
        injection if hooked else None,
        noise,
        HW,
        prompt(),
        params,
        identity=ident,
        negative=negative,
        batch_cfg=batch_cfg,
        step_cache=step_cache,
    )


BASE = SamplingParams(width=32, height=32, steps=3, guidance=3.5)


def test_zero_id_weight_is_bit_identical_to_plain_flux() -> None:
    plain = run(BASE, ident=None, hooked=False)
    assert torch.equal(run(BASE.__class__(**{**BASE.__dict__, "id_weight": 0.0}), ident=identity(1)), plain)
    with_id = run(BASE, ident=identity(1))
    assert (with_id - plain).abs().max() > 1e-3


def test_start_step_at_or_past_steps_is_bit_identical_to_plain_flux() -> None:
    plain = run(BASE, ident=None, hooked=False)
    for start in (3, 10):
        params = SamplingParams(width=32, height=32, steps=3, guidance=3.5, start_step=start)
        assert torch.equal(run(params, ident=identity(1)), plain)


def test_identities_change_latents_and_same_identity_and_seed_reproduce() -> None:
    a1 = run(BASE, ident=identity(1))
    a2 = run(BASE, ident=identity(1))
    b = run(BASE, ident=identity(2))
    assert torch.equal(a1, a2)
    assert (a1 - b).abs().max() > 1e-3
    assert (run(BASE, ident=identity(1), seed=8) - a1).abs().max() > 1e-3


def test_id_is_injected_only_from_start_step() -> None:
    transformer = tiny.tiny_transformer()
    adapter = tiny.tiny_adapter()
    injection = IdentityInjection(adapter)
    injection.attach(transformer)
    per_call: list[int] = []
    counter = [0]
    adapter.pulid_ca[0].register_forward_hook(lambda *a: counter.__setitem__(0, counter[0] + 1))

    def after(*args: Any) -> None:
        per_call.append(counter[0])
        counter[0] = 0

    transformer.register_forward_hook(after)
    params = SamplingParams(width=32, height=32, steps=4, guidance=3.5, start_step=2)
    run(params, ident=identity(1), transformer=transformer, injection=injection)
    assert per_call == [0, 0, 1, 1]


def record_calls(transformer: Any, injection: IdentityInjection) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """(text tokens, ID tokens) of every transformer call."""
    seen: list[tuple[torch.Tensor, torch.Tensor | None]] = []
    transformer.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append((kwargs["encoder_hidden_states"], injection.id_tokens)),
        with_kwargs=True,
    )
    return seen


CFG = SamplingParams(width=32, height=32, steps=4, guidance=1.0, true_cfg=3.0)


def test_sequential_true_cfg_makes_2n_minus_1_calls_and_negative_pass_gets_uncond_id() -> None:
    transformer = tiny.tiny_transformer()
    injection = IdentityInjection(tiny.tiny_adapter())
    injection.attach(transformer)
    seen = record_calls(transformer, injection)
    ident = identity(1)
    negative = prompt(9)
    out = run(CFG, ident=ident, negative=negative, transformer=transformer, injection=injection, batch_cfg=False)
    assert len(seen) == 2 * 4 - 1
    # Step 0 runs the positive pass only; then (positive, negative) per step.
    positive, negative_calls = [seen[0], *seen[1::2]], seen[2::2]
    assert len(negative_calls) == 3
    for text, ids in positive:
        assert torch.equal(text, prompt().text) and ids is not None and torch.equal(ids, ident.cond)
    for text, ids in negative_calls:
        assert torch.equal(text, negative.text)
        assert ids is not None and torch.equal(ids, ident.uncond)
        assert ids.abs().sum() > 0
    no_cfg = run(SamplingParams(width=32, height=32, steps=4, guidance=1.0), ident=ident)
    assert (out - no_cfg).abs().max() > 1e-3


@pytest.mark.parametrize("start_step", [0, 2])
def test_batched_true_cfg_gives_the_sequential_latents_in_n_calls(start_step: int) -> None:
    transformer = tiny.tiny_transformer()
    injection = IdentityInjection(tiny.tiny_adapter())
    injection.attach(transformer)
    ident, negative = identity(1), prompt(9)
    params = SamplingParams(width=32, height=32, steps=4, guidance=1.0, true_cfg=3.0, start_step=start_step)
    sequential = run(
        params, ident=ident, negative=negative, transformer=transformer, injection=injection, batch_cfg=False
    )
    seen = record_calls(transformer, injection)
    batched = run(params, ident=ident, negative=negative, transformer=transformer, injection=injection)
    torch.testing.assert_close(batched, sequential, rtol=0, atol=1e-5)
    # One call per step: step 0 alone, then positive and negative as one batch of two whose ID tokens
    # are (cond, uncond) once the identity is on.
    assert [text.shape[0] for text, _ in seen] == [1, 2, 2, 2]
    for step, (text, ids) in enumerate(seen[1:], start=1):
        assert torch.equal(text, torch.cat([prompt().text, negative.text]))
        if step < start_step:
            assert ids is None
        else:
            assert ids is not None and torch.equal(ids, torch.cat([ident.cond, ident.uncond]))


class HostSyncs(TorchDispatchMode):
    """Counts the ops that make the host wait for the device or copy Python data to it.

    ``_local_scalar_dense`` is behind ``.item()``, ``bool()`` and ``float()`` of a tensor; ``lift_fresh``
    is ``torch.tensor(python data)``, a pageable host-to-device copy on a GPU.
    """

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = str(func.overloadpacket.__name__)
        if name in ("_local_scalar_dense", "lift_fresh", "lift_fresh_copy"):
            self.ops.append(name)
        return func(*args, **(kwargs or {}))


def test_the_loop_has_no_per_step_host_syncs() -> None:
    transformer = tiny.tiny_transformer()
    injection = IdentityInjection(tiny.tiny_adapter())
    injection.attach(transformer)
    counts = []
    for steps in (2, 5):
        params = SamplingParams(width=32, height=32, steps=steps, guidance=3.5, true_cfg=2.0, start_step=1)
        with HostSyncs() as syncs:
            run(params, ident=identity(1), negative=prompt(9), transformer=transformer, injection=injection)
        counts.append(syncs.ops)
    # Whatever the set-up costs, it is paid once per job: three more steps add nothing.
    assert counts[0] == counts[1]


def test_true_cfg_without_negative_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        run(SamplingParams(width=32, height=32, steps=2, guidance=1.0, true_cfg=2.0), ident=None)


def test_pack_roundtrip_and_decode() -> None:
    x = torch.randn(2, 4, 8, 12)
    assert pack(x).shape == (2, 24, 16)
    assert torch.equal(unpack(pack(x), 8, 12), x)
    latents = run(BASE, ident=None, hooked=False)
    images = decode(tiny.tiny_vae(), latents, HW)  # 16x16 latent, 8x upscale
    assert images.shape == (1, 3, 128, 128)
    assert images.min() >= 0 and images.max() <= 1


def test_encode_prompt_with_tiny_text_encoders() -> None:
    parts = tiny.tiny_text_parts()
    encoders = TextEncoders(**parts)
    a = encode_prompt(
        encoders, "a photo of person", max_sequence_length=8, device=torch.device("cpu"), dtype=torch.float32
    )
    b = encode_prompt(encoders, "a blurry city", max_sequence_length=8, device=torch.device("cpu"), dtype=torch.float32)
    assert a.text.shape == (1, 8, 32) and a.pooled.shape == (1, 32) and a.text_ids.shape == (8, 3)
    assert not torch.equal(a.text, b.text) and not torch.equal(a.pooled, b.pooled)


def test_decode_runs_a_float32_vae_under_autocast() -> None:
    vae = tiny.tiny_vae()
    latents = run(BASE, ident=None, hooked=False)
    exact = decode(vae, latents, HW)
    mixed = decode(vae, latents.bfloat16(), HW, torch.bfloat16)
    assert mixed.dtype == torch.float32 and vae.dtype == torch.float32
    assert not torch.equal(mixed, exact)  # the convolutions did run in bfloat16
    assert (mixed - exact).abs().max() < 0.05


def test_first_block_cache_skips_steps_at_a_measured_pixel_cost() -> None:
    """Tiny random models, 16 steps, identity from step 3: how many steps run every block, and the image
    difference against the uncached render (0-255 pixels after the tiny VAE)."""
    import math

    from diffusers import FirstBlockCacheConfig

    params = SamplingParams(width=32, height=32, steps=16, guidance=3.5, start_step=3)
    vae = tiny.tiny_vae()
    results = {}
    for threshold in (0.1, 0.5):
        transformer = tiny.tiny_transformer()
        injection = IdentityInjection(tiny.tiny_adapter())
        injection.attach(transformer)
        exact = run(params, ident=identity(1), transformer=transformer, injection=injection)
        transformer.enable_cache(FirstBlockCacheConfig(threshold=threshold))
        full_steps = [0]
        last = transformer.single_transformer_blocks[-1].proj_out
        last.register_forward_hook(lambda *a, counter=full_steps: counter.__setitem__(0, counter[0] + 1))
        cached = run(params, ident=identity(1), transformer=transformer, injection=injection, step_cache=True)
        a, b = decode(vae, exact, HW) * 255, decode(vae, cached, HW) * 255
        psnr = 10 * math.log10(255**2 / float(((a - b) ** 2).mean()))
        results[threshold] = (full_steps[0], float((a - b).abs().mean()), psnr)
    # Measured: threshold 0.1 runs 7 of 16 steps in full, 0.34 mean pixel difference, 54.7 dB.
    full, mean_difference, psnr = results[0.1]
    assert 2 < full < 16 and mean_difference < 1.0 and psnr > 45
    # However lax the threshold, step 0 and the step where the identity switches on run in full.
    assert results[0.5][0] == 2
