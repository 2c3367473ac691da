"""The database engines: SQLite (WAL, BEGIN IMMEDIATE for writes) or PostgreSQL, and migrations."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


class DatabaseUrlError(ValueError):
    """The configured database URL cannot be used."""


def normalize_url(url: str) -> str:
    """Accept plain ``sqlite:///`` and ``postgresql://`` URLs and pick the async drivers."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise DatabaseUrlError(f"not a database URL: {url!r}") from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return str(parsed.set(drivername="sqlite+aiosqlite"))
    if backend == "postgresql":
        return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    raise DatabaseUrlError(f"unsupported database {backend!r}: use sqlite or postgresql")


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


class Database:
    """Owns the engines. ``write()`` is a transaction that may write; ``read()`` one that only reads.

    On SQLite every write transaction starts with ``BEGIN IMMEDIATE`` so a read-then-write never hits
    "database is locked" on the upgrade, and one in-process lock keeps this process's writers from
    spinning in SQLite's busy handler against each other.
    """

    def __init__(self, url: str, *, pool_size: int = 10, schema: str | None = None) -> None:
        self.url = normalize_url(url)
        self.dialect = make_url(self.url).get_backend_name()
        self._write_lock: asyncio.Lock | None = asyncio.Lock() if self.is_sqlite else None
        if self.is_sqlite:
            self.writer = create_async_engine(self.url, pool_size=pool_size, max_overflow=0)
            self.reader = create_async_engine(self.url, pool_size=pool_size, max_overflow=0)
            _sqlite_pragmas(self.writer, begin="BEGIN IMMEDIATE")
            _sqlite_pragmas(self.reader, begin="BEGIN")
        else:
            # A schema keeps several deployments (or test runs) apart in one database.
            connect_args = {"server_settings": {"search_path": schema}} if schema else {}
            self.writer = create_async_engine(
                self.url, pool_size=pool_size, max_overflow=pool_size, connect_args=connect_args
            )
            self.reader = self.writer

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A write transaction: committed on normal exit, rolled back on any exception."""
        async with contextlib.AsyncExitStack() as stack:
            if self._write_lock is not None:
                await stack.enter_async_context(self._write_lock)
            session = AsyncSession(self.writer, expire_on_commit=False)
            await stack.enter_async_context(session)
            async with session.begin():
                yield session

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        async with AsyncSession(self.reader, expire_on_commit=False) as session, session.begin():
            yield session

    async def dispose(self) -> None:
        await self.writer.dispose()
        if self.reader is not self.writer:
            await self.reader.dispose()

    async def upgrade(self) -> None:
        """Apply pending migrations (under a file lock on SQLite, so processes starting together agree)."""
        lock_path = None
        if self.is_sqlite:
            database = make_url(self.url).database
            if database and database != ":memory:":
                lock_path = Path(database).with_suffix(".migrate.lock")
        with _file_lock(lock_path):
            async with self.writer.connect() as conn:
                await conn.run_sync(_run_upgrade)
                await conn.commit()


def _sqlite_pragmas(engine: AsyncEngine, *, begin: str) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's begin event own the transaction start instead of the driver.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql(begin)


@contextlib.contextmanager
def _file_lock(path: Path | None) -> Any:
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run_upgrade(connection: Any) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
