"""Workers that say what they serve: this process's row in the registry, and the fleet as a front end sees it."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass

from engine.clock import SYSTEM_CLOCK, Clock
from storage import workers
from storage.db import Database
from storage.workers import WorkerInfo

log = logging.getLogger(__name__)


def version() -> str:
    try:
        return importlib.metadata.version("likeness")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_mb: int


def detect_gpu() -> Gpu | None:
    """The first CUDA device torch sees; None without torch or without a GPU."""
    if importlib.util.find_spec("torch") is None:
        return None
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        props = torch.cuda.get_device_properties(0)
        return Gpu(str(props.name), int(props.total_memory) // 2**20)
    except Exception:  # a broken driver is no reason to stop a worker that may serve providers
        log.warning("could not read the GPU's properties", exc_info=True)
        return None


class Registration:
    """This process's row in the worker registry: written with each heartbeat, removed on a clean stop.

    ``serving`` says, when asked, which backends the process can serve now and with how many free slots."""

    def __init__(
        self,
        db: Database,
        *,
        worker_id: str,
        serving: Callable[[], dict[str, int]],
        ttl_s: float,
        gpu: Gpu | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.db, self.serving, self.ttl_s, self.clock = db, serving, ttl_s, clock
        self.draining = False
        self._info = WorkerInfo(
            id=worker_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            version=version(),
            gpu_name=None if gpu is None else gpu.name,
            gpu_memory_mb=None if gpu is None else gpu.memory_mb,
            started_at=clock.time(),
        )

    @property
    def worker_id(self) -> str:
        return self._info.id

    def info(self) -> WorkerInfo:
        """The row as it would be written now."""
        return dataclasses.replace(
            self._info,
            backends={} if self.draining else self.serving(),
            draining=self.draining,
            last_seen=self.clock.time(),
        )

    async def beat(self) -> None:
        """Write the row as of now (and drop rows of workers silent past the TTL)."""
        try:
            await self.db.write(workers.beat, worker=self.info(), now=self.clock.time(), ttl_s=self.ttl_s)
        except Exception:  # the next beat tries again; the row only expires after several misses
            log.exception("worker registration failed")

    async def remove(self) -> None:
        try:
            await self.db.write(workers.remove, worker_id=self.worker_id)
        except Exception:
            log.warning("could not remove this worker's registration; it expires by itself", exc_info=True)


class FleetView:
    """The live workers as a front end routes against them, read from the registry at most every
    ``refresh_s`` (a front end asks on every submit; the database is asked a few times a minute at most)."""

    def __init__(self, db: Database, *, ttl_s: float, refresh_s: float = 5.0, clock: Clock = SYSTEM_CLOCK) -> None:
        self.db, self.ttl_s, self.refresh_s, self.clock = db, ttl_s, refresh_s, clock
        self._workers: list[WorkerInfo] = []
        self._read_at: float | None = None

    async def workers(self) -> list[WorkerInfo]:
        now = self.clock.monotonic()
        if self._read_at is None or now - self._read_at >= self.refresh_s:
            try:
                self._workers = await self.db.read(workers.live, now=self.clock.time(), ttl_s=self.ttl_s)
                self._read_at = now
            except Exception:  # route against what was last seen rather than refuse every job
                log.exception("reading the worker registry failed")
        return list(self._workers)

    async def served(self) -> frozenset[str]:
        """Backends some live worker that is not draining serves now."""
        return frozenset(workers.served(await self.workers()))

    def forget(self) -> None:
        """Read the registry again at the next question."""
        self._read_at = None
