"""The local engine as a backend of the dispatcher: a job rendered on tiny models end to end."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.dispatch import Dispatcher
from engine.events import ProgressHub
from engine.local.backend import LocalBackend
from engine.request import GenerationRequest
from engine.routing import Router
from engine.settings import DispatchSettings
from storage import jobs
from storage.blobs import LocalBlobStore
from storage.db import Database
from storage.settings import QueueSettings
from storage.states import JobState
from tests.engine.local import tiny
from tests.engine.local.face_models import face_photo
from tests.storage.ledger_helpers import credits_of, drift, new_user


def _png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.write_models_dir(tmp_path_factory.mktemp("models"))


async def test_local_backend_renders_through_the_dispatcher(db: Database, tmp_path: Path, models_dir: Path) -> None:
    backend = LocalBackend(
        tiny.tiny_settings(models_dir), renderer_factory=tiny.tiny_renderer, weights_check=tiny.check_tiny_models
    )
    blobs = LocalBlobStore(tmp_path / "blobs")
    settings = DispatchSettings()
    router = Router({"local": backend}, ["local"], Dispatcher.breakers_for(["local"], settings))
    dispatcher = Dispatcher(
        db, blobs, router, settings=settings, queue=QueueSettings(heartbeat_s=0.2), hub=ProgressHub(), worker_id="gpu"
    )
    user = await new_user(db, credits=5)
    good = await blobs.put(_png(face_photo()))
    faceless = await blobs.put(_png(np.zeros((64, 64, 3), np.uint8)))
    for job_id, face in (("rendered", good), ("no-face", faceless)):
        request = GenerationRequest(prompt="a portrait", faces=(b"",), width=256, height=256, steps=2, seed=3)
        await db.write(
            jobs.submit,
            job=jobs.NewJob(id=job_id, user_id=user, params=request.to_params(), cost=1, face_keys=[face]),
            now=time.time(),
            daily_jobs_default=10,
        )
    try:
        await dispatcher.drain()
    finally:
        await backend.close()
    rendered = await db.read(jobs.get, job_id="rendered")
    assert rendered is not None and rendered.state == JobState.SUCCEEDED and rendered.backend == "local"
    [image] = await db.read(jobs.images_of, job_id="rendered")
    assert (image.width, image.height) == (256, 256)
    assert Image.open(io.BytesIO(await blobs.get(image.blob_key))).size == (256, 256)
    faceless_job = await db.read(jobs.get, job_id="no-face")
    assert faceless_job is not None and faceless_job.state == JobState.FAILED and faceless_job.error == "no_face"
    assert await credits_of(db, user) == (4, 0)  # charged for the render, refunded for the photo without a face
    assert await drift(db) == []
