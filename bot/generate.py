"""`likeness generate`: one job through the same ledger and dispatcher, for operators checking a setup."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot import messages
from bot.errors import UserError
from bot.intake import normalize_photo
from bot.service.core import EXTENSIONS
from bot.wiring.engine import EngineParts
from engine.events import JobProgress, ProgressKind
from engine.request import GenerationRequest, size_for_aspect
from storage import delivery, jobs, users
from storage.models import Job
from storage.states import DeliveryState, JobState, Tier

OPERATOR = ("cli", "operator")


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
    """Run one job to its end; returns the written files. Raises UserError with one clear line."""
    faces: list[bytes] = []
    for path in args.faces:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise UserError(f"cannot read {path}: {exc.strerror}") from None
        faces.append(normalize_photo(raw))
    request = build_request(args.prompt, tuple(faces), args.params)
    route = [args.backend] if args.backend else runtime.router.route
    if args.backend and args.backend not in runtime.router.backends:
        raise UserError(f"unknown backend {args.backend!r}")
    refusal = runtime.router.refusal(request, route)
    if refusal is not None:
        if not refusal.problems:
            raise UserError("no backend available: " + "; ".join(refusal.unavailable))
        raise UserError(messages.no_backend(refusal.problems).replace("\n", " "))

    now = time.time()
    user = await runtime.db.write(
        users.ensure_user,
        platform=OPERATOR[0],
        platform_user_id=OPERATOR[1],
        now=now,
        welcome_credits=0,
        tier=Tier.OPERATOR,
        unlimited=True,
    )
    face_keys = [await runtime.blobs.put(face) for face in faces]
    job_id = f"cli-{uuid.uuid4().hex[:12]}"
    await runtime.db.write(
        jobs.submit,
        job=jobs.NewJob(
            id=job_id,
            user_id=user.id or 0,
            params=request.to_params(),
            cost=0,
            face_keys=face_keys,
            route=route,
            pinned=args.backend is not None,
            reply_target={"platform": "cli"},
            deadline_s=runtime.settings.queue.job_deadline_s,
        ),
        now=now,
        daily_jobs_default=0,
    )
    unsubscribe = runtime.hub.subscribe(_printer(job_id))
    stop = asyncio.Event()
    dispatching = asyncio.create_task(runtime.dispatcher.run(stop))
    try:
        job = await _until_finished(runtime, job_id, dispatching)
    finally:
        stop.set()
        await dispatching
        unsubscribe()
    if job.state != JobState.SUCCEEDED:
        raise UserError(f"job {job_id} {job.state}: {job.error or 'unknown reason'}")
    images = await runtime.db.read(jobs.images_of, job_id=job_id)
    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    for image in images:
        path = args.out / f"{job_id}-{image.index + 1}.{EXTENSIONS.get(image.content_type, 'img')}"
        path.write_bytes(await runtime.blobs.get(image.blob_key))
        written.append(path)
    await runtime.db.write(
        delivery.mark_delivery, job_id=job_id, state=DeliveryState.DELIVERED, path="file", now=time.time()
    )
    return written


async def _until_finished(runtime: EngineParts, job_id: str, dispatching: asyncio.Task[None]) -> Job:
    while True:
        job = await runtime.db.read(jobs.get, job_id=job_id)
        assert job is not None
        if job.state in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED):
            return job
        if dispatching.done():
            dispatching.result()  # surfaces a crash of the loop
        await asyncio.sleep(0.2)


def _printer(job_id: str) -> Any:
    def show(event: JobProgress) -> None:
        if event.job_id != job_id:
            return
        if event.kind is ProgressKind.BACKEND:
            line = f"rendering on {event.backend}"
        elif event.kind is ProgressKind.PROVIDER_QUEUE:
            line = f"queued at {event.backend}" + (f", position {event.position}" if event.position is not None else "")
        elif event.kind is ProgressKind.RENDERING and event.fraction is not None:
            line = f"rendering {event.fraction:.0%}"
        else:
            line = str(event.kind)
        print(f"[{job_id}] {line}", file=sys.stderr, flush=True)

    return show
