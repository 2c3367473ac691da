"""What the router changes is told or, with --strict, refused; --mode reaches SDXL; queued jobs' status
messages follow the queue with an estimate that holds within a stated tolerance."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from bot import messages
from bot.errors import UserError
from bot.frontend import FrontEnd
from bot.progress import ProgressEdits
from bot.service.estimates import Place, places
from bot.service.imagine import ImagineInput
from bot.service.use_cases import LikenessService
from engine.backend import GenerationResult, Progress
from engine.capabilities import Capabilities, Choice, Range
from engine.changes import Change, ChangeKind
from engine.dispatch import Dispatcher
from engine.events import ProgressHub
from engine.request import GenerationRequest
from engine.routing import Router
from storage.blobs import LocalBlobStore
from storage.db import Database
from storage.estimates import QueueView
from tests.bot.service.conftest import ANN, BOB, ChatTarget, face_photo, world_settings
from tests.bot.service.scripted import CAPABILITIES, ScriptedBackend

FLUX = Capabilities(limits={**CAPABILITIES.limits, "num_images": Range(1, 1, 1, integer=True)}, max_faces=1)
SDXL = Capabilities(
    limits={
        **CAPABILITIES.limits,
        "width": Range(512, 2048, 768, integer=True),
        "height": Range(512, 2048, 1024, integer=True),
        "mode": Choice(("fidelity", "extreme style"), "fidelity"),
    },
    max_faces=4,
)
LOCAL = Capabilities(limits={**FLUX.limits}, max_faces=4)


@dataclass
class Backends:
    service: LikenessService
    flux: ScriptedBackend
    sdxl: ScriptedBackend
    local: ScriptedBackend
    dispatcher: Dispatcher
    db: Database
    extra: dict[str, Any] = field(default_factory=dict)


@pytest.fixture
async def backends(tmp_path: Path) -> AsyncIterator[Backends]:
    settings = world_settings(tmp_path)
    db = Database(f"sqlite:///{tmp_path / 'likeness.db'}")
    await db.upgrade()
    blobs = LocalBlobStore(tmp_path / "blobs")
    flux = ScriptedBackend(name="fal-flux-pulid", capabilities=FLUX)
    sdxl = ScriptedBackend(name="fal-pulid", capabilities=SDXL)
    local = ScriptedBackend(name="local", capabilities=LOCAL)
    found = {b.name: b for b in (flux, sdxl, local)}
    router = Router(found, list(found), Dispatcher.breakers_for(list(found), settings.dispatch))
    dispatcher = Dispatcher(
        db, blobs, router, settings=settings.dispatch, queue=settings.queue, hub=ProgressHub(), worker_id="changes"
    )
    service = LikenessService(db=db, blobs=blobs, router=router, settings=settings)
    try:
        yield Backends(service, flux, sdxl, local, dispatcher, db)
    finally:
        await dispatcher.abandon()
        await db.dispose()


def asked(event: str, text: str, photos: int = 1) -> ImagineInput:
    return ImagineInput(event, text, ChatTarget("101"), photos=tuple(face_photo() for _ in range(photos)))


async def test_a_model_change_for_several_images_is_told_and_strict_refuses_it(backends: Backends) -> None:
    imagine = backends.service.imagine
    pending = await imagine.submit(ANN, asked("two", "twins --n 2"))
    assert pending.pending  # several images: confirmed first
    queued = await imagine.confirm(ANN, "two", ChatTarget("101"))
    note = "Note: rendered with SDXL on fal-pulid, as FLUX can't take this number of images."
    assert queued.reply.text.endswith("\n" + note)
    await backends.dispatcher.drain()
    assert [r.num_images for r in backends.sdxl.requests] == [2] and not backends.flux.requests

    with pytest.raises(UserError) as refused:
        await imagine.submit(ANN, asked("strict", "twins --n 2 --strict"))
    assert refused.value.message == messages.strict_refused(
        [Change(ChangeKind.FAMILY, "fal-pulid", "FLUX", "SDXL", "num_images")]
    )


async def test_fewer_reference_photos_are_told_and_strict_keeps_a_backend_that_takes_them_all(
    backends: Backends,
) -> None:
    imagine = backends.service.imagine
    told = await imagine.submit(ANN, asked("three", "a portrait", photos=3))
    assert told.reply.text.endswith("\nNote: fal-flux-pulid uses 1 of the face's 3 photos.")

    exact = await imagine.submit(BOB, asked("exact", "a portrait --strict", photos=3))
    assert "Note" not in exact.reply.text
    await backends.dispatcher.drain()
    assert [len(r.faces) for r in backends.local.requests] == [3]  # the FLUX backend that takes all three
    assert [len(r.faces) for r in backends.flux.requests] == [1]  # the first photo only, as told

    backends.local.down = "not installed"
    with pytest.raises(UserError) as refused:
        await imagine.submit(ANN, asked("none", "a portrait --strict", photos=3))
    assert "1 of 3 photos on fal-flux-pulid" in refused.value.message


async def test_mode_reaches_sdxl_and_the_change_of_model_is_told(backends: Backends) -> None:
    submitted = await backends.service.imagine.submit(ANN, asked("mode", "a sketch --mode style"))
    assert submitted.reply.text.endswith("as FLUX can't take this mode.")
    await backends.dispatcher.drain()
    [request] = backends.sdxl.requests
    assert request.mode == "extreme style"
    with pytest.raises(UserError) as bad:
        await backends.service.imagine.submit(ANN, asked("bad", "a sketch --mode loud"))
    assert bad.value.message == messages.BAD_OPTION.format(
        flag="--mode", value="loud", expected="fidelity or extreme-style"
    )


# --- the queue -----------------------------------------------------------------------------------------


def test_the_estimate_plays_the_queue_out_over_the_running_slots() -> None:
    view = QueueView(
        queued=[("a", "x"), ("b", "y"), ("c", "x")],
        running=[("x", 100.0), ("y", 95.0)],
        times={"x": [10.0, 12.0, 30.0], "y": [20.0]},
    )
    # Slots free at 100+12-104=8 (x) and 95+20-104=11 (y); a (x, 12) takes the first, b (y, 20) the
    # second, c (x, 12) the one a frees at 20.
    assert places(view, now=104.0) == [Place("a", 1, 20.0), Place("b", 2, 31.0), Place("c", 3, 32.0)]
    assert [p.eta_s for p in places(QueueView(queued=[("a", "x")]), now=0.0)] == [None]  # nothing measured yet


class Edits:
    platform = "test"

    def __init__(self) -> None:
        self.shown: list[tuple[str, str]] = []

    def parse_target(self, data: Mapping[str, Any]) -> Mapping[str, Any]:
        return data

    async def show_progress(self, job_id: str, target: Any, text: str) -> None:
        self.shown.append((job_id, text))


class Errors:
    def __init__(self) -> None:
        self.seen: list[float] = []

    def eta_error(self, seconds: float) -> None:
        self.seen.append(seconds)


RENDER_S = 0.4
TOLERANCE_S = 0.6  # the estimate of a job three places back, against when its result came


async def test_status_messages_follow_the_queue_and_the_estimate_holds(tmp_path: Path) -> None:
    settings = world_settings(tmp_path, dispatch={"concurrency": 1, "poll_s": 0.05})
    db = Database(f"sqlite:///{tmp_path / 'likeness.db'}")
    await db.upgrade()
    blobs = LocalBlobStore(tmp_path / "blobs")
    backend = ScriptedBackend(name="fal-flux-pulid", capabilities=FLUX)
    plain = backend.generate

    async def timed(request: GenerationRequest, progress: Progress) -> GenerationResult:
        await asyncio.sleep(RENDER_S)
        return await plain(request, progress)

    backend.generate = timed  # type: ignore[method-assign]
    router = Router({backend.name: backend}, [backend.name], Dispatcher.breakers_for([backend.name], settings.dispatch))
    hub = ProgressHub()
    dispatcher = Dispatcher(db, blobs, router, settings=settings.dispatch, queue=settings.queue, hub=hub, worker_id="q")
    service = LikenessService(db=db, blobs=blobs, router=router, settings=settings)
    edits, errors = Edits(), Errors()
    progress = ProgressEdits(
        service.results,
        {"test": cast(FrontEnd, edits)},
        hub,
        estimates=service.estimates,
        metrics=errors,
        interval_s=0.0,
        queue_poll_s=60.0,
    )
    stop = asyncio.Event()
    try:
        for n in range(3):  # render times to measure
            await service.imagine.submit(ANN, asked(f"warm{n}", "warm up"))
        await dispatcher.drain()
        users = [ANN, BOB, *(ANN.__class__("telegram", str(500 + n), f"U{n}", chat_id=str(500 + n)) for n in range(3))]
        for n, user in enumerate(users):
            await service.imagine.submit(user, asked(f"q{n}", f"queued {n}"))
        first = await service.imagine._status(await _job(service, "q3"))
        assert first.reply.text.startswith("Queued — 4th in line, ready in about ")
        progress.start()
        running = asyncio.create_task(dispatcher.run(stop, drain_s=0))
        await asyncio.wait_for(_until(lambda: any(j == "q4" and "1st in line" in t for j, t in edits.shown)), 10)
        await asyncio.wait_for(_until(lambda: len(errors.seen) >= 4), 10)
        shown = [text.split(",")[0] for job, text in edits.shown if job == "q4" and text.startswith("Queued")]
        # Edited as each earlier job finished (a pass may fold two moves into one edit): 5th … 1st.
        numbers = [int(text.removeprefix("Queued — ")[0]) for text in shown]
        assert numbers[0] >= 4 and numbers[-1] == 1 and numbers == sorted(set(numbers), reverse=True)
        assert len(numbers) >= 3
        assert all(abs(error) <= TOLERANCE_S for error in errors.seen), errors.seen
        stop.set()
        await asyncio.wait_for(running, 10)
    finally:
        stop.set()
        progress.close()
        await dispatcher.abandon()
        await db.dispose()


async def _job(service: LikenessService, job_id: str) -> Any:
    from storage import jobs

    return await service.imagine.db.read(jobs.get, job_id=job_id)


async def _until(condition: Any) -> None:
    while not condition():  # noqa: ASYNC110 - the fakes record; nothing to wait on but time
        await asyncio.sleep(0.02)
