"""`likeness generate`: one job through the same ledger and dispatcher, for operators checking a setup."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot import messages
from bot.errors import OperatorError, UserError
from bot.intake import normalize_photo
from bot.service.face_check import FaceCheck
from bot.service.operator import Finished, OperatorJobs
from bot.wiring.engine import EngineParts
from engine.events import JobProgress, Listener
from engine.request import GenerationRequest, size_for_aspect

POLL_S = 0.2


@dataclass(frozen=True)
class GenerateArgs:
    faces: list[Path]
    prompt: str
    backend: str | None
    out: Path
    params: dict[str, Any]


def build_request(prompt: str, faces: tuple[bytes, ...], params: dict[str, Any]) -> GenerationRequest:
    values = {k: v for k, v in params.items() if v is not None}
    aspect = values.pop("aspect", None)
    if aspect is not None:
        size = size_for_aspect(aspect)
        if size is None:
            raise UserError(messages.BAD_ASPECT.format(value=aspect))
        values.setdefault("width", size[0])
        values.setdefault("height", size[1])
    return GenerationRequest(prompt=prompt, faces=faces, **values)


async def generate(runtime: EngineParts, args: GenerateArgs) -> list[Path]:
    """Run one job to its end; returns the written files. Raises OperatorError (or UserError for a bad photo
    or parameter) with one clear line."""
    faces: list[bytes] = []
    for path in args.faces:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise OperatorError(messages.cannot_read(path, exc.strerror)) from None
        faces.append(normalize_photo(raw))
    request = build_request(args.prompt, tuple(faces), args.params)
    # The face checks run before anything is stored or sent to a provider, as they do for chat users.
    check = FaceCheck(
        runtime.db,
        judge=runtime.judge,
        settings=runtime.settings.judge,
        consent=False,
        retention_days=runtime.settings.retention.days,
    )
    found = await check.enroll(faces)
    operator = OperatorJobs(db=runtime.db, blobs=runtime.blobs, router=runtime.router, queue=runtime.settings.queue)
    job_id = await operator.submit(request, backend=args.backend, face_embeddings=found)
    unsubscribe = runtime.hub.subscribe(_printer(job_id))
    stop = asyncio.Event()
    # Only this job: real users' queued jobs are left to the service's workers, never taken and dropped here.
    dispatching = asyncio.create_task(runtime.dispatcher.run(stop, only=job_id))
    try:
        finished = await _until_finished(operator, job_id, dispatching)
    finally:
        stop.set()
        await dispatching
        unsubscribe()
    if not finished.succeeded:
        raise OperatorError(messages.operator_job_failed(job_id, finished.state, finished.error))
    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    scores = await operator.scores(job_id)
    for image, (likeness, judge) in zip(await operator.outputs(job_id), scores, strict=True):
        path = args.out / image.filename
        path.write_bytes(image.data)
        written.append(path)
        print(messages.operator_score(path, likeness, judge), file=sys.stderr, flush=True)
    await operator.written(job_id)
    return written


async def _until_finished(operator: OperatorJobs, job_id: str, dispatching: asyncio.Task[None]) -> Finished:
    while True:
        finished = await operator.finished(job_id)
        if finished is not None:
            return finished
        if dispatching.done():
            dispatching.result()  # surfaces a crash of the loop
        await asyncio.sleep(POLL_S)


def _printer(job_id: str) -> Listener:
    def show(event: JobProgress) -> None:
        if event.job_id == job_id:
            print(messages.operator_progress(event), file=sys.stderr, flush=True)

    return show
