"""Progress of running jobs, published in-process to whoever shows it (front ends, the CLI), and relayed
between processes where the database carries notifications."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from storage.notify import PROGRESS, Notifier

log = logging.getLogger(__name__)


class ProgressKind(StrEnum):
    STARTED = "started"  # a worker took the job
    BACKEND = "backend"  # rendering moved to this backend (first choice or failover)
    PROVIDER_QUEUE = "provider_queue"  # waiting in the provider's own queue at ``position``
    RENDERING = "rendering"
    LIKENESS_RETRY = "likeness_retry"  # the result did not look enough like the face: rendering once more, free
    FINISHED = "finished"  # the job reached a terminal state; its delivery is pending


@dataclass(frozen=True)
class JobProgress:
    job_id: str
    kind: ProgressKind
    backend: str | None = None
    position: int | None = None
    fraction: float | None = None


Listener = Callable[[JobProgress], None]


class ProgressHub:
    """Latest-value-wins progress: listeners are called synchronously and must not block."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def publish(self, event: JobProgress) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # a broken listener must not stop a job
                log.exception("progress listener failed", extra={"job_id": event.job_id})


# Milestones cross processes at once; a running job's step progress at most every ``coalesce_s`` per job.
_MILESTONES = frozenset({ProgressKind.STARTED, ProgressKind.BACKEND, ProgressKind.FINISHED})


class ProgressRelay:
    """Carries a hub's events to the other processes sharing the database, and theirs into the hub, through
    a notifier (``storage.notify``); so a job's progress and end reach whichever process shows or
    delivers it. Each process tags what it sends and ignores its own echo."""

    def __init__(self, hub: ProgressHub, notifier: Notifier, *, origin: str, coalesce_s: float = 0.25) -> None:
        self.hub, self.notifier, self.origin, self.coalesce_s = hub, notifier, origin, coalesce_s
        self._outbox: asyncio.Queue[JobProgress] = asyncio.Queue()
        self._coalescing: dict[str, JobProgress] = {}
        self._relaying = False
        self._sender: asyncio.Task[None] | None = None
        self._unsubscribe = hub.subscribe(self._outgoing)
        notifier.listen(PROGRESS, self._incoming)

    def start(self) -> None:
        self._sender = asyncio.create_task(self._send_all(), name="progress-relay")

    async def close(self) -> None:
        self._unsubscribe()
        if self._sender is not None:
            # What is already in the outbox (a job's end, typically) still goes out.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._outbox.join(), 2.0)
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender

    def _outgoing(self, event: JobProgress) -> None:
        if self._relaying:
            return
        if event.kind in _MILESTONES:
            self._coalescing.pop(event.job_id, None)  # superseded
            self._outbox.put_nowait(event)
            return
        if event.job_id not in self._coalescing:
            asyncio.get_running_loop().call_later(self.coalesce_s, self._flush, event.job_id)
        self._coalescing[event.job_id] = event

    def _flush(self, job_id: str) -> None:
        event = self._coalescing.pop(job_id, None)
        if event is not None:
            self._outbox.put_nowait(event)

    async def _send_all(self) -> None:
        while True:
            event = await self._outbox.get()
            try:
                await self.notifier.send(PROGRESS, _encode(self.origin, event))
            finally:
                self._outbox.task_done()

    def _incoming(self, payload: str) -> None:
        try:
            origin, event = _decode(payload)
        except (ValueError, KeyError, TypeError):
            log.warning("unreadable progress notification ignored")
            return
        if origin == self.origin:
            return
        self._relaying = True
        try:
            self.hub.publish(event)
        finally:
            self._relaying = False


def _encode(origin: str, event: JobProgress) -> str:
    return json.dumps(
        {
            "o": origin,
            "j": event.job_id,
            "k": str(event.kind),
            "b": event.backend,
            "p": event.position,
            "f": event.fraction,
        },
        separators=(",", ":"),
    )


def _decode(payload: str) -> tuple[str, JobProgress]:
    data = json.loads(payload)
    event = JobProgress(
        str(data["j"]),
        ProgressKind(data["k"]),
        None if data.get("b") is None else str(data["b"]),
        None if data.get("p") is None else int(data["p"]),
        None if data.get("f") is None else float(data["f"]),
    )
    return str(data["o"]), event
