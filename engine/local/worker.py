"""The engine's child process: models live there so inference never blocks the service's event loop.

The parent side is asyncio and imports no torch. One render runs at a time. A cancelled render is
asked to stop at its next denoising step; a child that does not stop within the grace period, dies,
or hits a CUDA/out-of-memory error is replaced by a fresh one on the next job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from typing import Any, Protocol

from engine.errors import (
    BackendError,
    InvalidInputError,
    NoFaceError,
    ProviderFailedError,
    TransientError,
)
from engine.local.jobs import RenderCancelled, RenderedImage, RenderJob
from engine.local.settings import LocalSettings

logger = logging.getLogger(__name__)


class Renderer(Protocol):
    def render(
        self,
        job: RenderJob,
        on_progress: Callable[[float], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[RenderedImage]: ...


# Runs in the child; must be a module-level function so the spawn context can pickle it by name.
RendererFactory = Callable[[LocalSettings], Renderer]


def default_renderer(settings: LocalSettings) -> Renderer:
    """Load the real engine from ``settings.models_dir`` (imports torch, diffusers, insightface)."""
    from engine.local.renderer import load_renderer

    return load_renderer(settings)


def is_device_failure(exc: BaseException) -> bool:
    """Out of memory or a CUDA error: the process's GPU state cannot be trusted afterwards."""
    if isinstance(exc, MemoryError):
        return True
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    accelerator_error = getattr(torch, "AcceleratorError", None)
    if accelerator_error is not None and isinstance(exc, accelerator_error):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(s in text for s in ("CUDA", "CUBLAS", "cuDNN", "NCCL"))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def child_main(conn: Connection, cancel: Any, settings: LocalSettings, factory: RendererFactory) -> None:
    """Entry point of the engine process."""
    try:
        renderer = factory(settings)
    except BaseException as exc:
        conn.send(("failed", _describe(exc)))
        return
    conn.send(("ready",))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message[0] == "stop":
            return
        job: RenderJob = message[1]
        try:
            images = renderer.render(job, on_progress=lambda f: conn.send(("progress", f)), should_stop=cancel.is_set)
        except RenderCancelled:
            conn.send(("cancelled",))
        except NoFaceError as exc:
            conn.send(("error", "no_face", exc.detail))
        except InvalidInputError as exc:
            conn.send(("error", "invalid", exc.detail))
        except Exception as exc:
            if is_device_failure(exc):
                conn.send(("error", "device", _describe(exc)))
                return  # exit: the parent starts a clean process for the next job
            conn.send(("error", "failed", _describe(exc)))
        else:
            conn.send(("result", images))


class _ChildGone(Exception):
    pass


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class EngineProcess:
    """Owns the child process and speaks its protocol."""

    def __init__(
        self,
        settings: LocalSettings,
        factory: RendererFactory = default_renderer,
        *,
        start_timeout_s: float | None = None,
        cancel_grace_s: float | None = None,
    ) -> None:
        self._settings = settings
        self._factory = factory
        self._start_timeout_s = start_timeout_s if start_timeout_s is not None else settings.startup_timeout_s
        self._grace_s = cancel_grace_s if cancel_grace_s is not None else settings.cancel_grace_s
        self._context = multiprocessing.get_context("spawn")
        self._process: Any = None
        self._conn: Connection | None = None
        self._cancel: Any = None
        self._lock: asyncio.Lock | None = None
        self._cleanup: asyncio.Task[None] | None = None
        self.startup_error: str | None = None
        self.starts = 0

    @property
    def busy(self) -> bool:
        return self._lock is not None and self._lock.locked()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None and self._process.is_alive() else None

    async def render(self, job: RenderJob, on_progress: Callable[[float], Awaitable[None]]) -> list[RenderedImage]:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._cleanup is not None:
                await self._cleanup
                self._cleanup = None
            if self._process is None or not self._process.is_alive():
                await self._start()
            assert self._conn is not None
            self._cancel.clear()
            self._conn.send(("render", job))
            try:
                return await self._await_result(on_progress)
            except asyncio.CancelledError:
                self._cancel.set()
                self._cleanup = asyncio.create_task(self._settle_after_cancel())
                raise

    async def _await_result(self, on_progress: Callable[[float], Awaitable[None]]) -> list[RenderedImage]:
        while True:
            try:
                message = await self._receive()
            except _ChildGone:
                code = await self._reap()
                raise TransientError(f"the engine process died during a render (exit code {code})") from None
            kind = message[0]
            if kind == "progress":
                await on_progress(float(message[1]))
            elif kind == "result":
                images: list[RenderedImage] = message[1]
                return images
            elif kind == "error":
                raise await self._error(message[1], message[2])
            # "ready" can still be queued from a start whose caller was cancelled: nothing to do.
            elif kind == "cancelled":
                # A stop request left over from a cancelled job never reaches a live one; be safe anyway.
                raise TransientError("the engine stopped the render unexpectedly")

    async def _error(self, kind: str, detail: str) -> BackendError:
        if kind == "no_face":
            return NoFaceError(detail)
        if kind == "invalid":
            return InvalidInputError(detail)
        if kind == "device":
            await self._reap()
            logger.warning("engine process restarts after a device error: %s", detail)
            return TransientError(f"GPU error, engine restarted: {detail}")
        return ProviderFailedError(f"local engine failed: {detail}")

    async def _settle_after_cancel(self) -> None:
        """Wait for the cancelled render to stop at a step boundary; kill the process if it does not."""
        try:
            async with asyncio.timeout(self._grace_s):
                while True:
                    message = await self._receive()
                    if message[0] in ("cancelled", "result", "error"):
                        if message[0] == "error" and message[1] == "device":
                            await self._reap()
                        return
        except (TimeoutError, _ChildGone):
            logger.warning("cancelled render did not stop within %.0f s; killing the engine process", self._grace_s)
            await self._kill()

    async def _start(self) -> None:
        if self.startup_error is not None:
            raise ProviderFailedError(f"local engine cannot start: {self.startup_error}")
        parent_conn, child_conn = self._context.Pipe(duplex=True)
        self._cancel = self._context.Event()
        process = self._context.Process(
            target=child_main,
            args=(child_conn, self._cancel, self._settings, self._factory),
            name="likeness-engine",
            daemon=True,
        )
        process.start()
        # Our copy of the child's end must close, or a dead child would never show as EOF here.
        child_conn.close()
        self._process, self._conn = process, parent_conn
        self.starts += 1
        logger.info("engine process %s starting", process.pid)
        try:
            async with asyncio.timeout(self._start_timeout_s):
                message = await self._receive()
        except TimeoutError:
            await self._kill()
            raise TransientError(f"the engine did not load within {self._start_timeout_s:.0f} s") from None
        except _ChildGone:
            code = await self._reap()
            raise TransientError(f"the engine process died while loading (exit code {code})") from None
        if message[0] == "failed":
            await self._reap()
            self.startup_error = str(message[1])
            logger.error("local engine failed to load: %s", self.startup_error)
            raise ProviderFailedError(f"local engine cannot start: {self.startup_error}")
        logger.info("engine process %s ready", process.pid)

    async def _receive(self) -> Any:
        conn = self._conn
        if conn is None:
            raise _ChildGone
        loop = asyncio.get_running_loop()
        while True:
            try:
                if conn.poll():
                    return conn.recv()
            except (EOFError, OSError):
                raise _ChildGone from None
            readable: asyncio.Future[None] = loop.create_future()
            fd = conn.fileno()
            loop.add_reader(fd, _resolve, readable)
            try:
                await readable
            finally:
                loop.remove_reader(fd)

    async def _reap(self) -> int | None:
        """Collect a process that has exited or is about to."""
        process = self._process
        if process is None:
            return None
        await asyncio.to_thread(process.join, 10)
        if process.is_alive():
            await self._kill()
        self._forget()
        return int(process.exitcode) if process.exitcode is not None else None

    async def _kill(self) -> None:
        process = self._process
        if process is not None and process.is_alive():
            process.kill()
            await asyncio.to_thread(process.join, 10)
        self._forget()

    def _forget(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._process, self._conn = None, None

    async def close(self) -> None:
        """Stop the child (politely, then by force)."""
        if self._cleanup is not None:
            await self._cleanup
            self._cleanup = None
        process = self._process
        if process is None:
            return
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.send(("stop",))
        await asyncio.to_thread(process.join, 10)
        await self._kill()
