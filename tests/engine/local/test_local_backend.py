"""LocalBackend end to end through its engine process: tiny real models, and scripted failures."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.backend import ProviderRef, Stage
from engine.errors import InvalidInputError, NoFaceError, ProviderFailedError, TransientError
from engine.local import weights
from engine.local.backend import CAPABILITIES, LocalBackend
from engine.local.settings import LocalSettings
from engine.request import GenerationRequest
from tests.engine.local import scripted, tiny
from tests.engine.local.face_models import face_photo

pytestmark = pytest.mark.timeout(120)


class RecordingProgress:
    def __init__(self) -> None:
        self.updates: list[tuple[Stage, float | None]] = []
        self.first = asyncio.Event()

    @property
    def resume(self) -> ProviderRef | None:
        return None

    async def submitting(self) -> None:
        raise AssertionError("a local render sends no submit")

    async def submitted(self, ref: ProviderRef) -> None:
        raise AssertionError("a local render has no provider request")

    async def update(self, stage: Stage, *, queue_position: int | None = None, fraction: float | None = None) -> None:
        self.updates.append((stage, fraction))
        if stage is Stage.RUNNING and fraction:
            self.first.set()


async def started(progress: RecordingProgress) -> None:
    """Wait until the render has reported a step."""
    await asyncio.wait_for(progress.first.wait(), 60)


def png(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.write_models_dir(tmp_path_factory.mktemp("models"))


def request(prompt: str = "a photo of person", **params: Any) -> GenerationRequest:
    faces = params.pop("faces", (png(face_photo()),))
    return GenerationRequest(prompt=prompt, faces=faces, **params)


async def test_renders_tiny_models_end_to_end_in_the_child_process(models_dir: Path) -> None:
    backend = LocalBackend(
        tiny.tiny_settings(models_dir),
        renderer_factory=tiny.tiny_renderer,
        weights_check=tiny.check_tiny_models,
    )
    assert backend.name == "local"
    assert backend.unavailable_reason() is None
    try:
        params = {"width": 256, "height": 256, "steps": 2, "seed": 11, "output_format": "png"}
        progress = RecordingProgress()
        result = await backend.generate(request(**params, num_images=2), progress)
        assert len(result.images) == 2 and result.seed == "11"
        from PIL import Image

        for image in result.images:
            assert image.content_type == "image/png" and (image.width, image.height) == (256, 256)
            assert Image.open(io.BytesIO(image.data)).size == (256, 256)
        fractions = [f for stage, f in progress.updates if stage is Stage.RUNNING]
        assert fractions == [0.25, 0.5, 0.75, 1.0]
        # The two images use seeds 11 and 12.
        assert result.images[0].data != result.images[1].data

        again = await backend.generate(request(**params, num_images=1), RecordingProgress())
        assert again.images[0].data == result.images[0].data
        other_face = (png(face_photo(tone=(110, 80, 170), seed=5)),)
        changed = await backend.generate(request(**params, faces=other_face), RecordingProgress())
        assert changed.images[0].data != result.images[0].data

        several = (png(face_photo(seed=1)), png(face_photo(seed=2)))
        jpeg = await backend.generate(request(width=256, height=256, steps=1, faces=several), RecordingProgress())
        assert jpeg.images[0].content_type == "image/jpeg"

        with pytest.raises(NoFaceError, match="photo 1 of 1"):
            await backend.generate(
                request(**params, faces=(png(np.zeros((64, 64, 3), np.uint8)),)), RecordingProgress()
            )
        with pytest.raises(InvalidInputError, match="not a readable image"):
            await backend.generate(request(**params, faces=(b"not an image",)), RecordingProgress())
        assert backend._process.starts == 1
    finally:
        await backend.close()


async def test_default_renderer_reports_what_it_cannot_load(models_dir: Path) -> None:
    # The production loader on a directory without EVA-CLIP (or without timm here) fails to start.
    backend = LocalBackend(tiny.tiny_settings(models_dir), weights_check=lambda _: [])
    with pytest.raises(ProviderFailedError, match="cannot start"):
        await backend.generate(request(width=256, height=256, steps=1), RecordingProgress())
    assert "failed to load" in (backend.unavailable_reason() or "")
    await backend.close()


def scripted_backend(tmp_path: Path, **settings: Any) -> LocalBackend:
    base = LocalSettings(enabled=True, models_dir=tmp_path, device="cpu", startup_timeout_s=60, **settings)
    return LocalBackend(base, renderer_factory=scripted.scripted_renderer, weights_check=lambda _: [])


async def test_device_errors_become_transient_and_restart_the_process(tmp_path: Path) -> None:
    backend = scripted_backend(tmp_path)
    try:
        ok = await backend.generate(request(), RecordingProgress())
        first_pid = ok.images[0].data
        for prompt in ("oom", "cuda"):
            with pytest.raises(TransientError, match="GPU error"):
                await backend.generate(request(prompt), RecordingProgress())
        with pytest.raises(TransientError, match="died during a render"):
            await backend.generate(request("crash"), RecordingProgress())
        with pytest.raises(ProviderFailedError, match="something broke"):
            await backend.generate(request("boom"), RecordingProgress())
        with pytest.raises(NoFaceError):
            await backend.generate(request("no face"), RecordingProgress())
        after = await backend.generate(request(), RecordingProgress())
        assert after.images[0].data != first_pid
        assert backend._process.starts == 4  # first, after oom, after cuda, after crash
    finally:
        await backend.close()


async def test_cancelled_render_stops_at_a_step_and_keeps_the_process(tmp_path: Path) -> None:
    backend = scripted_backend(tmp_path)
    try:
        progress = RecordingProgress()
        task = asyncio.create_task(backend.generate(request("slow", steps=50), progress))
        await started(progress)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        pid = backend._process.pid
        result = await backend.generate(request(), RecordingProgress())
        assert result.images[0].data == str(pid).encode()
        assert backend._process.starts == 1
    finally:
        await backend.close()


async def test_render_that_ignores_cancel_is_killed_and_replaced(tmp_path: Path) -> None:
    backend = scripted_backend(tmp_path, cancel_grace_s=0.2)
    try:
        progress = RecordingProgress()
        task = asyncio.create_task(backend.generate(request("stuck", steps=50), progress))
        await started(progress)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        result = await backend.generate(request(), RecordingProgress())
        assert result.images[0].data == str(backend._process.pid).encode()
        assert backend._process.starts == 2
    finally:
        await backend.close()


async def test_second_job_waits_as_queued(tmp_path: Path) -> None:
    backend = scripted_backend(tmp_path)
    try:
        first_progress = RecordingProgress()
        first = asyncio.create_task(backend.generate(request("slow", steps=10), first_progress))
        await asyncio.wait_for(first_progress.first.wait(), 60)
        second_progress = RecordingProgress()
        second = await backend.generate(request(), second_progress)
        assert second_progress.updates[0] == (Stage.QUEUED, None)
        assert len((await first).images) == 1 and len(second.images) == 1
    finally:
        await backend.close()


async def test_load_failure_is_reported_and_makes_the_backend_unavailable(tmp_path: Path) -> None:
    settings = LocalSettings(enabled=True, models_dir=tmp_path, device="cpu")
    backend = LocalBackend(settings, renderer_factory=scripted.broken_renderer, weights_check=lambda _: [])
    with pytest.raises(ProviderFailedError, match=r"config\.json"):
        await backend.generate(request(), RecordingProgress())
    reason = backend.unavailable_reason()
    assert reason is not None and "failed to load" in reason and "config.json" in reason
    with pytest.raises(ProviderFailedError, match="cannot start"):
        await backend.generate(request(), RecordingProgress())
    await backend.close()


def test_unavailable_reasons(tmp_path: Path) -> None:
    assert "disabled" in (LocalBackend(LocalSettings()).unavailable_reason() or "")
    assert "models directory" in (LocalBackend(LocalSettings(enabled=True)).unavailable_reason() or "")
    reason = LocalBackend(LocalSettings(enabled=True, models_dir=tmp_path)).unavailable_reason() or ""
    first = weights.check(tmp_path)[0]
    assert "missing" in reason and str(first.path) in reason and first.path.is_relative_to(tmp_path)
    assert "likeness models download" in reason


def test_resolve_applies_defaults_and_refuses_what_it_cannot_serve(tmp_path: Path) -> None:
    backend = LocalBackend(LocalSettings(enabled=True, models_dir=tmp_path))
    job = backend.resolve(request())
    assert (job.width, job.height, job.steps, job.guidance) == (896, 1152, 28, 4.0)
    assert (job.id_weight, job.start_step, job.true_cfg, job.output_format) == (1.0, 0, 1.0, "jpeg")
    assert 0 <= job.seed < 2**32 and job.max_sequence_length == 128
    explicit = backend.resolve(request(seed=5, negative_prompt="blurry", true_cfg=3.5, id_weight=0.0))
    assert (explicit.seed, explicit.negative_prompt, explicit.true_cfg, explicit.id_weight) == (
        5,
        "blurry",
        3.5,
        0.0,
    )
    with pytest.raises(InvalidInputError, match="multiples of 16"):
        backend.resolve(request(width=1000))
    with pytest.raises(InvalidInputError, match="id_weight"):
        backend.resolve(request(id_weight=3.5))
    with pytest.raises(InvalidInputError, match="1 to 4 face photos"):
        backend.resolve(request(faces=(b"x",) * 5))
    with pytest.raises(InvalidInputError, match="num_images"):
        backend.resolve(request(num_images=5))
    assert CAPABILITIES.check("local", request(mode="fast"))[0].allowed is None
    assert CAPABILITIES.limits["negative_prompt"].contains("x" * 2000)
    assert not CAPABILITIES.limits["negative_prompt"].contains(3)
    assert CAPABILITIES.max_faces == 4


def test_backend_modules_import_without_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "for name in ('torch', 'diffusers', 'transformers', 'insightface', 'onnxruntime', 'cv2', 'timm'):\n"
        "    sys.modules[name] = None\n"
        "import engine.local, engine.local.backend, engine.local.weights, engine.local.settings\n"
        "from engine.local.backend import LocalBackend\n"
        "print(LocalBackend.name)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parents[3],
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "local"
