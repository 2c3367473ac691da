"""The retention sweep: expire old finished jobs and delete the photos and outputs nothing else uses, and
delete stored blobs that nothing references at all (orphans) once they are past a grace period."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from storage import blob_refs, pending, retention
from storage.blobs import BlobStore
from storage.db import Database

log = logging.getLogger(__name__)

DAY_S = 86_400.0
# Longer than any request takes from storing its photos (or a render its outputs) to the commit that
# references them, so a blob on its way into use is never taken for an orphan.
ORPHAN_GRACE_S = 6 * 3600.0
# A costly job its user neither confirmed nor declined within this is dropped, its photos with it.
UNCONFIRMED_TTL_S = DAY_S


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


async def sweep_orphans(db: Database, blobs: BlobStore, *, now: float, grace_s: float = ORPHAN_GRACE_S) -> int:
    """Delete blobs stored more than ``grace_s`` ago that nothing references; returns how many.

    Orphans come from requests refused after their photos were stored, outputs of a completion that never
    committed, and a crash between a commit that released blobs and their deletion. A blob stored again
    within the grace period (the same photo sent anew) is kept: its time restarts with each store.
    """
    before = now - grace_s
    deleted = 0
    async for keys in blobs.stored_before(before):
        for key in await db.read(blob_refs.unreferenced, keys=keys):
            try:
                deleted += await blobs.delete_if_stored_before(key, before)
            except OSError as exc:
                log.warning("orphan sweep could not delete blob key=%s error=%s", key, exc)
    partial = await blobs.remove_partial(before)
    if deleted or partial:
        log.info("orphan sweep deleted blobs=%d unfinished_writes=%d", deleted, partial)
    return deleted


async def retention_loop(
    db: Database,
    blobs: BlobStore,
    *,
    days: float,
    interval_s: float,
    stop: asyncio.Event,
    clock: Callable[[], float] = time.time,
    orphan_grace_s: float = ORPHAN_GRACE_S,
) -> None:
    """Sweep every ``interval_s`` seconds until ``stop`` is set; a failed sweep is logged and retried.

    With ``days`` 0 no job's photos or outputs expire, but orphans, which no job or identity uses, still go.
    """
    if days <= 0:
        log.info("retention off: photos and outputs are kept forever")
    while not stop.is_set():
        now = clock()
        # A database or disk hiccup must not end either sweep for the life of the process.
        try:
            await sweep(db, blobs, days=days, now=now)
        except Exception:
            log.exception("retention sweep failed")
        try:
            await sweep_orphans(db, blobs, now=now, grace_s=orphan_grace_s)
        except Exception:
            log.exception("orphan sweep failed")
        try:
            await _delete_unused(db, blobs, await db.write(pending.expire, before=now - UNCONFIRMED_TTL_S))
        except Exception:
            log.exception("dropping unconfirmed jobs failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval_s)
