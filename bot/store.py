"""Opening the store the way every process does: migrate SQLite by itself, require it on PostgreSQL."""

from __future__ import annotations

from bot.errors import UserError
from bot.settings import Settings
from storage import migrate
from storage.blobs import LocalBlobStore
from storage.db import Database


async def open_database(settings: Settings) -> Database:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.resolved_database_url, schema=settings.database_schema)
    if db.is_sqlite:
        await db.upgrade()
    elif await migrate.pending(db):
        await db.dispose()
        raise UserError("the PostgreSQL schema is not up to date: run `likeness db upgrade` first")
    return db


def open_blobs(settings: Settings) -> LocalBlobStore:
    settings.blobs_dir.mkdir(parents=True, exist_ok=True)
    return LocalBlobStore(settings.blobs_dir)
