"""The retention sweep: expire old finished jobs and delete the photos and outputs nothing else uses."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from storage import blob_refs, retention
from storage.blobs import BlobStore
from storage.db import Database

log = logging.getLogger(__name__)

DAY_S = 86_400.0


async def sweep(db: Database, blobs: BlobStore, *, days: float, now: float, batch: int = 200) -> int:
    """Expire jobs finished more than ``days`` ago (0: keep forever); returns how many were expired.

    Each batch is its own short transaction, so a large backlog never holds the database's write lock
    for long. Blobs are deleted only after the transaction that released them has committed.
    """
    if days <= 0:
        return 0
    before = now - days * DAY_S
    expired = 0
    while True:
        result = await db.write(retention.expire_finished, before=before, now=now, limit=batch)
        expired += len(result.job_ids)
        if result.orphaned_keys:
            await _delete_unused(db, blobs, result.orphaned_keys)
        if not result.more:
            break
    if expired:
        log.info("retention expired jobs=%d older_than_days=%g", expired, days)
    return expired


async def _delete_unused(db: Database, blobs: BlobStore, keys: list[str]) -> None:
    for key in await db.read(blob_refs.unreferenced, keys=keys):
        try:
            await blobs.delete(key)
        except OSError as exc:
            # The reference is gone already; a blob left behind costs disk space, not correctness.
            log.warning("retention could not delete blob key=%s error=%s", key, exc)


async def retention_loop(
    db: Database,
    blobs: BlobStore,
    *,
    days: float,
    interval_s: float,
    stop: asyncio.Event,
    clock: Callable[[], float] = time.time,
) -> None:
    """Sweep every ``interval_s`` seconds until ``stop`` is set; a failed sweep is logged and retried."""
    if days <= 0:
        log.info("retention off: photos and outputs are kept forever")
        return
    while not stop.is_set():
        try:
            await sweep(db, blobs, days=days, now=clock())
        except Exception:
            # A database hiccup must not end retention for the life of the process.
            log.exception("retention sweep failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval_s)
