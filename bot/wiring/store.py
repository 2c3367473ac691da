"""Opening the store the way every process does: migrate SQLite by itself, require it on PostgreSQL."""

from __future__ import annotations

import logging

from bot.errors import OperatorError
from bot.settings import Settings
from storage import migrate
from storage.blobs import BlobStore, LocalBlobStore
from storage.db import Database
from storage.object_blobs import ObjectBlobStore, ObjectStoreError

log = logging.getLogger(__name__)


async def open_database(settings: Settings) -> Database:
    """The migrated database; an OperatorError when it cannot be reached or is behind on PostgreSQL."""
    db = _database(settings)
    try:
        if db.is_sqlite:
            await db.upgrade()
        elif await migrate.pending(db):
            raise OperatorError("the PostgreSQL schema is not up to date: run `likeness db upgrade` first")
    except OperatorError:
        await db.dispose()
        raise
    except Exception as exc:  # the driver's own errors: unreachable server, refused login, unwritable file
        log.debug("opening the database failed", exc_info=True)
        await db.dispose()
        raise OperatorError(f"cannot open the database (LIKENESS_DATABASE_URL): {_first_line(exc)}") from exc
    return db


async def upgrade_database(settings: Settings) -> None:
    """`likeness db upgrade`: apply pending migrations, on SQLite and PostgreSQL alike."""
    db = _database(settings)
    try:
        await db.upgrade()
    except Exception as exc:
        log.debug("upgrading the database failed", exc_info=True)
        raise OperatorError(f"cannot upgrade the database (LIKENESS_DATABASE_URL): {_first_line(exc)}") from exc
    finally:
        await db.dispose()


def open_blobs(settings: Settings) -> BlobStore:
    """The blob store LIKENESS_BLOBS__URL names: a bucket, or a directory (created if missing)."""
    url = settings.blobs.url
    if url is not None and url.startswith("s3://"):
        try:
            return ObjectBlobStore.from_url(url)
        except ObjectStoreError as exc:
            raise OperatorError(f"LIKENESS_BLOBS__URL: {exc}") from None
    variable = "LIKENESS_BLOBS__URL" if url else "LIKENESS_DATA_DIR"
    try:
        settings.blobs_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OperatorError(f"{variable}: cannot create {settings.blobs_dir}: {exc.strerror}") from exc
    return LocalBlobStore(settings.blobs_dir)


async def check_blobs(blobs: BlobStore) -> None:
    """An object store answers before the process takes work (one small request); a directory needs none."""
    if isinstance(blobs, ObjectBlobStore):
        try:
            await blobs.check()
        except ObjectStoreError as exc:
            raise OperatorError(f"LIKENESS_BLOBS__URL: {exc}") from None


def _database(settings: Settings) -> Database:
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OperatorError(f"LIKENESS_DATA_DIR: cannot create {settings.data_dir}: {exc.strerror}") from exc
    return Database(
        settings.resolved_database_url, schema=settings.database_schema, pool_size=settings.database_pool_size
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
