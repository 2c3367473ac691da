"""Opening the store the way every process does: migrate SQLite by itself, require it on PostgreSQL."""

from __future__ import annotations

import logging

from bot.errors import OperatorError
from bot.settings import Settings
from storage import migrate
from storage.blobs import LocalBlobStore
from storage.db import Database

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


def open_blobs(settings: Settings) -> LocalBlobStore:
    try:
        settings.blobs_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OperatorError(f"LIKENESS_DATA_DIR: cannot create {settings.blobs_dir}: {exc.strerror}") from exc
    return LocalBlobStore(settings.blobs_dir)


def _database(settings: Settings) -> Database:
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OperatorError(f"LIKENESS_DATA_DIR: cannot create {settings.data_dir}: {exc.strerror}") from exc
    return Database(settings.resolved_database_url, schema=settings.database_schema)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
