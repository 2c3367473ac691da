"""torch.compile of the hooked transformer on the CPU (eager backend): few graphs, eager's numbers."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.local.acceleration import compile_blocks
from engine.local.adapter import AdapterConfig, CrossAttentionConfig, PulidAdapter
from engine.local.idformer import IdFormerConfig
from engine.local.injection import IdentityInjection
from engine.local.jobs import RenderJob
from tests.engine.local import tiny
from tests.engine.local.face_models import face_photo

# FLUX.1's 19 double and 38 single blocks (20 ID hooks), everything else as small as diffusers allows.
REAL_BLOCK_COUNTS: dict[str, Any] = {
    "patch_size": 1,
    "in_channels": 4,
    "num_layers": 19,
    "num_single_layers": 38,
    "attention_head_dim": 8,
    "num_attention_heads": 2,
    "joint_attention_dim": 8,
    "pooled_projection_dim": 8,
    "guidance_embeds": True,
    "axes_dims_rope": (2, 2, 4),
}


class GraphCounter:
    """A torch.compile backend that runs each graph eagerly and counts how many were made."""

    def __init__(self) -> None:
        self.graphs = 0

    def __call__(self, graph: torch.fx.GraphModule, example_inputs: list[Any]) -> Callable[..., Any]:
        self.graphs += 1
        return graph.forward


def inputs(batch: int, tokens: int, seed: int = 0) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    return {
        "hidden_states": torch.randn(batch, tokens, 4, generator=g),
        "encoder_hidden_states": torch.randn(batch, 3, 8, generator=g),
        "pooled_projections": torch.randn(batch, 8, generator=g),
        "timestep": torch.full((batch,), 0.5),
        "guidance": torch.full((batch,), 3.5),
        "img_ids": torch.randn(tokens, 3, generator=g),
        "txt_ids": torch.zeros(3, 3),
        "return_dict": False,
    }


@torch.no_grad()
def test_compiled_hooks_at_flux_block_counts_make_few_graphs_and_match_eager(fresh_dynamo: None) -> None:
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(**REAL_BLOCK_COUNTS).eval()
    adapter = PulidAdapter(
        AdapterConfig(
            idformer=IdFormerConfig(dim=16, depth=2, dim_head=1, heads=16, num_queries=2, output_dim=8, id_dim=8),
            cross_attention=CrossAttentionConfig(dim=16, kv_dim=8, dim_head=4, heads=2),
        )
    ).eval()
    injection = IdentityInjection(adapter)
    injection.attach(transformer)
    assert len(adapter.pulid_ca) == 20
    x = inputs(1, 20)
    ids, weight = torch.randn(1, 2, 8), torch.full((), 1.0)
    with injection.using(ids, weight):
        eager = transformer(**x)[0]
    plain = transformer(**x)[0]

    counter = GraphCounter()
    compile_blocks(transformer, injection, backend=counter)
    with injection.using(ids, weight):
        compiled = transformer(**x)[0]
    torch.testing.assert_close(compiled, eager, rtol=0, atol=1e-6)
    # One graph per block kind: hooked double blocks (the first apart, its input is a view), plain
    # double blocks, and two stride variants of each single-block kind. An index per hook made one
    # graph per hook, past dynamo's limit of 8.
    assert counter.graphs == 7
    # Without an identity the hooks add 0 * CA: plain FLUX, and the same graphs.
    torch.testing.assert_close(transformer(**x)[0], plain, rtol=0, atol=1e-6)
    with injection.using(torch.randn(1, 2, 8), torch.full((), 2.5)):
        transformer(**x)
    assert counter.graphs == 7


def png(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def pixels(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data))).astype(int)


def job_for(**values: Any) -> RenderJob:
    defaults: dict[str, Any] = {
        "prompt": "a portrait in the city",
        "faces": (png(face_photo()),),
        "guidance": 3.5,
        "id_weight": 1.0,
        "start_step": 0,
        "true_cfg": 1.0,
        "seed": 2,
        "output_format": "png",
        "max_sequence_length": 16,
    }
    return RenderJob(**{**defaults, **values})


def test_warm_up_compiles_every_graph_a_job_needs(fresh_dynamo: None, tmp_path: Path) -> None:
    # One block of each kind, both hooked, keeps the compile cheap; the test above covers every kind.
    one_each = {**tiny.TRANSFORMER_CONFIG, "num_layers": 1, "num_single_layers": 1}
    models = tiny.write_models_dir(tmp_path / "models", one_each)
    counter = GraphCounter()
    compiled = tiny.tiny_renderer(tiny.tiny_settings(models, compile=True), compile_backend=counter)
    after_warm_up = counter.graphs
    # Each block kind for one image and for true CFG's batch of two.
    assert after_warm_up == 4
    eager = tiny.tiny_renderer(tiny.tiny_settings(models))
    for job in (
        job_for(width=64, height=96, steps=2),
        job_for(width=80, height=48, steps=3, start_step=1, true_cfg=2.5, max_sequence_length=24),
    ):
        got, expected = compiled.render(job)[0], eager.render(job)[0]
        assert np.abs(pixels(got.data) - pixels(expected.data)).max() <= 1
    # Other sizes, another text length, identity on and off, true CFG: no new graph.
    assert counter.graphs == after_warm_up
