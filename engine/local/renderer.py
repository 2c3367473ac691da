"""The loaded PuLID-FLUX engine: models placed per memory mode, and one job rendered to encoded images."""

from __future__ import annotations

import io
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from engine.errors import InvalidInputError
from engine.local import weights
from engine.local.acceleration import compile_blocks, fp8_scheme, quantize_fp8, set_attention
from engine.local.adapter import PulidAdapter, config_from_shapes, read_shapes
from engine.local.faces import BiSeNetParser, FaceParser, InsightFaceAnalyzer, LandmarkDetector, RetinaFaceDetector
from engine.local.id_encoder import EvaLoader, IdentityEncoder, load_eva_clip
from engine.local.injection import IdentityInjection
from engine.local.jobs import RenderCancelled, RenderedImage, RenderJob
from engine.local.sampling import (
    DEFAULT_NEGATIVE_PROMPT,
    IdEmbedding,
    PromptEmbedding,
    SamplingParams,
    TextEncoders,
    decode,
    denoise,
    encode_prompt,
    initial_noise,
    latent_size,
)
from engine.local.settings import LocalSettings

logger = logging.getLogger(__name__)

MAX_PHOTO_SIDE = 1024  # photos are downscaled to this long side before face analysis
# The warm-up render: the default job size; other sizes share its compiled graphs (dynamic shapes).
WARM_UP_SIZE = (896, 1152)
CONTENT_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}


class Placement:
    """Moves offloaded models to the compute device only while they run (model CPU offload)."""

    def __init__(self, device: torch.device, offloaded: list[nn.Module]) -> None:
        self.device = device
        self._offloaded = {id(m) for m in offloaded}

    def is_offloaded(self, module: nn.Module) -> bool:
        return id(module) in self._offloaded

    @contextmanager
    def use(self, *modules: Any) -> Iterator[None]:
        moving = [m for m in modules if isinstance(m, nn.Module) and self.is_offloaded(m)]
        for module in moving:
            module.to(self.device)
        try:
            yield
        finally:
            for module in moving:
                module.to("cpu")
            if moving and self.device.type == "cuda":
                torch.cuda.empty_cache()


@dataclass
class Renderer:
    """Everything loaded, ready to render jobs one after another."""

    transformer: Any
    vae: Any
    scheduler: Any
    text: TextEncoders
    adapter: PulidAdapter
    injection: IdentityInjection
    identity: IdentityEncoder
    placement: Placement
    device: torch.device
    dtype: torch.dtype
    step_cache: bool = False

    @property
    def vae_scale_factor(self) -> int:
        return int(2 ** (len(self.vae.config.block_out_channels) - 1))

    def render(
        self,
        job: RenderJob,
        on_progress: Callable[[float], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[RenderedImage]:
        """Render ``job``; raises NoFaceError, InvalidInputError or RenderCancelled."""
        stop = should_stop or (lambda: False)
        multiple = self.vae_scale_factor * 2
        if job.width % multiple or job.height % multiple:
            raise InvalidInputError(f"width and height must be multiples of {multiple}")
        params = SamplingParams(
            width=job.width,
            height=job.height,
            steps=job.steps,
            guidance=job.guidance,
            id_weight=job.id_weight,
            start_step=job.start_step,
            true_cfg=job.true_cfg,
        )
        identity = None
        if job.id_weight != 0 and job.start_step < job.steps:
            photos = [decode_photo(face) for face in job.faces]
            with self.placement.use(self.identity.eva):
                identity = self.identity.encode(photos)
        with self.placement.use(self.text.text_encoder, self.text.text_encoder_2):
            prompt = encode_prompt(
                self.text,
                job.prompt,
                max_sequence_length=job.max_sequence_length,
                device=self.device,
                dtype=self.dtype,
            )
            negative = None
            if params.uses_true_cfg:
                negative = encode_prompt(
                    self.text,
                    job.negative_prompt or DEFAULT_NEGATIVE_PROMPT,
                    max_sequence_length=job.max_sequence_length,
                    device=self.device,
                    dtype=self.dtype,
                )
        latent_hw = latent_size(job.width, job.height, self.vae_scale_factor)
        channels = int(self.transformer.config.in_channels) // 4
        total = job.steps * job.num_images
        latents = []
        with self.placement.use(self.transformer):
            for k in range(job.num_images):

                def on_step(step: int, k: int = k) -> None:
                    if stop():
                        raise RenderCancelled
                    if on_progress is not None:
                        on_progress((k * job.steps + step) / total)

                if stop():
                    raise RenderCancelled
                noise = initial_noise(job.seed + k, channels, *latent_hw, device=self.device, dtype=self.dtype)
                latents.append(
                    denoise(
                        self.transformer,
                        self.scheduler,
                        self.injection,
                        noise,
                        latent_hw,
                        prompt,
                        params,
                        identity=identity,
                        negative=negative,
                        on_step=on_step,
                        step_cache=self.step_cache,
                    )
                )
        with self.placement.use(self.vae):
            pixels = [decode(self.vae, x, latent_hw, self.dtype) for x in latents]
        return [encode_image(p[0], job.output_format, job.output_quality) for p in pixels]

    @torch.no_grad()
    def warm_up(self, max_sequence_length: int, size: tuple[int, int] = WARM_UP_SIZE) -> None:
        """A two-step true-CFG render of random inputs: every graph a job can need gets compiled now.

        Step 0 runs one image with an identity, step 1 the positive and negative pass as a batch of two;
        with the identity path static (``keep_graph_static``) that is every block variant, and dynamic
        shapes cover the other sizes.
        """
        config = self.transformer.config
        g = torch.Generator().manual_seed(0)

        def random(*shape: int) -> torch.Tensor:
            return torch.randn(*shape, generator=g).to(self.device, self.dtype)

        def prompt() -> PromptEmbedding:
            text = random(1, max_sequence_length, int(config.joint_attention_dim))
            return PromptEmbedding(text, random(1, int(config.pooled_projection_dim)), torch.zeros_like(text[0, :, :3]))

        cfg = self.adapter.config
        ids = (1, cfg.idformer.num_queries, cfg.cross_attention.kv_dim)
        width, height = size
        params = SamplingParams(width=width, height=height, steps=2, guidance=3.5, true_cfg=2.0)
        latent_hw = latent_size(width, height, self.vae_scale_factor)
        channels = int(config.in_channels) // 4
        with self.placement.use(self.transformer):
            denoise(
                self.transformer,
                self.scheduler,
                self.injection,
                initial_noise(0, channels, *latent_hw, device=self.device, dtype=self.dtype),
                latent_hw,
                prompt(),
                params,
                identity=IdEmbedding(random(*ids), random(*ids)),
                negative=prompt(),
                step_cache=self.step_cache,
            )


def decode_photo(data: bytes) -> np.ndarray:
    """Encoded photo -> RGB uint8, long side at most MAX_PHOTO_SIDE (Lanczos)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            rgb = image.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise InvalidInputError(f"face photo is not a readable image: {exc}") from exc
    if max(rgb.size) > MAX_PHOTO_SIDE:
        scale = MAX_PHOTO_SIDE / max(rgb.size)
        rgb = rgb.resize((round(rgb.width * scale), round(rgb.height * scale)), Image.Resampling.LANCZOS)
    return np.asarray(rgb)


def encode_image(pixels: torch.Tensor, output_format: str, quality: int) -> RenderedImage:
    """(3, H, W) float [0, 1] -> encoded bytes."""
    from PIL import Image

    array = (pixels.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    image = Image.fromarray(array)
    buffer = io.BytesIO()
    if output_format == "png":
        image.save(buffer, format="PNG")
    elif output_format in ("jpeg", "webp"):
        image.save(buffer, format=output_format.upper(), quality=quality)
    else:
        raise InvalidInputError(f"unknown output format {output_format!r}")
    return RenderedImage(buffer.getvalue(), CONTENT_TYPES[output_format], image.width, image.height)


def _load(cls: Any, path: Path, **kwargs: Any) -> Any:
    """``from_pretrained`` on a local directory, in eval mode where it is a model."""
    loaded = cls.from_pretrained(path, local_files_only=True, **kwargs)
    return loaded.eval() if isinstance(loaded, nn.Module) else loaded


def load_renderer(
    settings: LocalSettings,
    *,
    eva_loader: EvaLoader | None = None,
    parser_loader: Callable[[], FaceParser] | None = None,
    fallback_loader: Callable[[], LandmarkDetector | None] | None = None,
    compile_backend: str | Callable[..., Any] = "inductor",
) -> Renderer:
    """Load every model from ``settings.models_dir``; never touches the network.

    With compilation on, the transformer is compiled and warmed up here, before the engine reports
    ready, so the first job runs at full speed.
    """
    # Any library that would look something up on the Hub fails instead of downloading.
    os.environ["HF_HUB_OFFLINE"] = "1"
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from transformers import AutoTokenizer, CLIPTextModel, T5EncoderModel

    if settings.models_dir is None:
        raise ValueError("the local engine needs models_dir")
    models = settings.models_dir
    flux = models / weights.FLUX_DIR
    device = torch.device(settings.device)
    dtype: torch.dtype = getattr(torch, settings.compute_dtype)
    mode = settings.memory_mode
    logger.info("loading the local engine from %s (%s, %s)", models, mode, settings.compute_dtype)

    transformer = _load(FluxTransformer2DModel, flux / "transformer", torch_dtype=dtype)
    # float32 weights: decoding runs under autocast, as in the reference code.
    vae = _load(AutoencoderKL, flux / "vae", torch_dtype=torch.float32)
    text = TextEncoders(
        tokenizer=_load(AutoTokenizer, flux / "tokenizer"),
        text_encoder=_load(CLIPTextModel, flux / "text_encoder", torch_dtype=dtype),
        tokenizer_2=_load(AutoTokenizer, flux / "tokenizer_2"),
        text_encoder_2=_load(T5EncoderModel, flux / "text_encoder_2", torch_dtype=dtype),
    )
    scheduler = _load(FlowMatchEulerDiscreteScheduler, flux / "scheduler")

    pulid_path = models / weights.PULID_FILE
    config = config_from_shapes(
        read_shapes(pulid_path),
        num_double_blocks=len(transformer.transformer_blocks),
        num_single_blocks=len(transformer.single_transformer_blocks),
    )
    with torch.device("meta"):
        adapter = PulidAdapter(config)
    adapter.load_file(pulid_path, dtype=dtype)
    # The adapter stays on the device in every mode: 1.1 GB, used by every denoising step.
    adapter.to(device).eval()
    injection = IdentityInjection(adapter)
    injection.attach(transformer)

    eva = (eva_loader or load_eva_clip(models / weights.EVA_FILE))(torch.device("cpu"), dtype)
    offloaded: list[nn.Module] = []
    if mode == "bf16":
        for module in (transformer, vae, text.text_encoder, text.text_encoder_2, eva):
            module.to(device)
    else:
        offloaded = [vae, text.text_encoder, text.text_encoder_2, eva]
        if mode == "fp8":
            # Quantised layer by layer on the device, so the 16-bit transformer never has to fit there.
            quantize_fp8(transformer, fp8_scheme(device), device=device)
            transformer.to(device)
        else:
            offloaded.append(transformer)
    set_attention(transformer, settings.attention_backend, device)
    step_cache = settings.step_cache > 0
    if step_cache:
        from diffusers import FirstBlockCacheConfig

        # After the ID hooks, so a skipped block also skips its cross-attention.
        transformer.enable_cache(FirstBlockCacheConfig(threshold=settings.step_cache))  # type: ignore[no-untyped-call]
    compiled = settings.compile if isinstance(settings.compile, bool) else device.type == "cuda"
    if compiled and step_cache:
        # The cache decides per step in Python whether to run the remaining blocks: a graph break that a
        # full-graph compile refuses, and without fullgraph every new size recompiles.
        logger.warning("step_cache is on: the transformer runs without torch.compile")
        compiled = False
    if compiled:
        # After the hooks are attached, so the compiled blocks include the ID cross-attention.
        compile_blocks(transformer, injection, backend=compile_backend)

    face_torch_device = "cuda" if settings.face_device == "cuda" else "cpu"
    face_models = models / weights.FACE_PARSER_DIR
    analyzer = InsightFaceAnalyzer(
        models / weights.ANTELOPE_DIR,
        device=settings.face_device,
        det_size=settings.det_size,
        min_face_px=settings.min_face_px,
        fallback=(
            fallback_loader()
            if fallback_loader is not None
            else RetinaFaceDetector(face_models, device=face_torch_device)
        ),
    )
    parser = parser_loader() if parser_loader is not None else BiSeNetParser(face_models, device=face_torch_device)
    identity = IdentityEncoder(
        analyzer,
        parser,
        eva,
        adapter.pulid_encoder,
        device=device,
        dtype=dtype,
        strategy=settings.multi_photo,
    )
    renderer = Renderer(
        transformer=transformer,
        vae=vae,
        scheduler=scheduler,
        text=text,
        adapter=adapter,
        injection=injection,
        identity=identity,
        placement=Placement(device, offloaded),
        device=device,
        dtype=dtype,
        step_cache=step_cache,
    )
    if compiled:
        started = time.monotonic()
        renderer.warm_up(settings.max_sequence_length)
        logger.info("compiled and warmed up in %.1f s", time.monotonic() - started)
    return renderer
