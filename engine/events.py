"""Progress of running jobs, published in-process to whoever shows it (front ends, the CLI)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

log = logging.getLogger(__name__)


class ProgressKind(StrEnum):
    STARTED = "started"  # a worker took the job
    BACKEND = "backend"  # rendering moved to this backend (first choice or failover)
    PROVIDER_QUEUE = "provider_queue"  # waiting in the provider's own queue at ``position``
    RENDERING = "rendering"
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
