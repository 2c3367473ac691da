"""The composition root's parts: store, backends, router, dispatcher, wired once per process."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp

from bot.settings import BACKEND_NAMES, Settings
from bot.store import open_blobs, open_database
from engine.backend import Backend
from engine.dispatch import Dispatcher
from engine.events import ProgressHub
from engine.metrics import Metrics
from engine.providers.registry import build_provider_backends
from engine.routing import Router
from storage.blobs import LocalBlobStore
from storage.db import Database

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    db: Database
    blobs: LocalBlobStore
    http: aiohttp.ClientSession
    hub: ProgressHub
    router: Router
    dispatcher: Dispatcher
    metrics: Metrics


def build_backends(settings: Settings, http: aiohttp.ClientSession) -> dict[str, Backend]:
    backends = build_provider_backends(
        http,
        fal=settings.fal,
        replicate=settings.replicate,
        wavespeed=settings.wavespeed,
        segmind=settings.segmind,
    )
    if settings.local.enabled:
        from engine.local.backend import LocalBackend  # torch and friends only where the engine runs

        backends["local"] = LocalBackend(settings.local_settings)
    return backends


def default_route(settings: Settings, backends: dict[str, Backend]) -> list[str]:
    """LIKENESS_ROUTE, or every configured backend in the documented order."""
    if settings.route:
        return list(settings.route)
    return [name for name in BACKEND_NAMES if name in backends and backends[name].unavailable_reason() is None]


@contextlib.asynccontextmanager
async def open_runtime(settings: Settings) -> AsyncIterator[Runtime]:
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
                worker_id=f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}",
                metrics=metrics,
            )
            try:
                yield Runtime(settings, db, blobs, http, hub, router, dispatcher, metrics)
            finally:
                for backend in backends.values():
                    close = getattr(backend, "close", None)
                    if close is not None:
                        await close()
    finally:
        await db.dispose()
