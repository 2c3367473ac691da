"""The engine side of every process: backends, router, dispatcher and metrics over the opened store."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp

from bot.settings import Settings
from bot.wiring.store import open_blobs, open_database
from engine.backend import Backend
from engine.catalogue import BACKEND_NAMES, LOCAL
from engine.dispatch import Dispatcher
from engine.events import ProgressHub
from engine.metrics import Metrics
from engine.providers.registry import build_provider_backends
from engine.routing import Router
from storage.blobs import LocalBlobStore
from storage.db import Database

log = logging.getLogger(__name__)


@dataclass
class EngineParts:
    """What one process opened: the store, the backends behind the router, and the dispatcher."""

    settings: Settings
    db: Database
    blobs: LocalBlobStore
    http: aiohttp.ClientSession
    hub: ProgressHub
    router: Router
    dispatcher: Dispatcher
    metrics: Metrics


def build_backends(settings: Settings, http: aiohttp.ClientSession) -> dict[str, Backend]:
    """Every provider backend, and the local engine when it is enabled."""
    backends = build_provider_backends(
        http,
        fal=settings.fal,
        replicate=settings.replicate,
        wavespeed=settings.wavespeed,
        segmind=settings.segmind,
    )
    if settings.local.enabled:
        from engine.local.backend import LocalBackend  # torch and friends only where the engine runs

        backends[LOCAL] = LocalBackend(settings.local_settings)
    return backends


def default_route(settings: Settings, backends: dict[str, Backend]) -> list[str]:
    """LIKENESS_ROUTE, or every configured backend in the catalogue's order."""
    if settings.route:
        return list(settings.route)
    return [name for name in BACKEND_NAMES if name in backends and backends[name].unavailable_reason() is None]


def worker_id() -> str:
    """Names this process in the ledger's leases: host, pid and a few random characters."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@contextlib.asynccontextmanager
async def open_engine(settings: Settings) -> AsyncIterator[EngineParts]:
    """Open the store and wire the engine over it; everything is closed when the block ends."""
    db = await open_database(settings)
    try:
        async with aiohttp.ClientSession() as http:
            backends = build_backends(settings, http)
            route = default_route(settings, backends)
            for name in route:
                reason = backends[name].unavailable_reason() if name in backends else "not installed"
                if reason:
                    log.warning("backend %s in the route is unavailable: %s", name, reason)
            router = Router(backends, route, Dispatcher.breakers_for(list(backends), settings.dispatch))
            hub = ProgressHub()
            blobs = open_blobs(settings)
            metrics = Metrics()
            dispatcher = Dispatcher(
                db,
                blobs,
                router,
                settings=settings.dispatch,
                queue=settings.queue,
                hub=hub,
                worker_id=worker_id(),
                metrics=metrics,
            )
            try:
                yield EngineParts(settings, db, blobs, http, hub, router, dispatcher, metrics)
            finally:
                for backend in backends.values():
                    close = getattr(backend, "close", None)
                    if close is not None:
                        await close()
    finally:
        await db.dispose()
