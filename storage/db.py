"""The database: SQLite (WAL, BEGIN IMMEDIATE for writes) or PostgreSQL, transactions, and migrations.

Repository functions are plain functions taking the open transaction as ``session`` (a SQLAlchemy Core
connection). ``Database.write`` and ``Database.read`` run one of them inside a transaction:

- on SQLite, on the standard ``sqlite3`` driver in a dedicated thread, so a whole transaction costs one
  hop off the event loop rather than one per driver call; one writer thread also keeps this process's
  writers from spinning in SQLite's busy handler against each other;
- on PostgreSQL, on asyncpg through SQLAlchemy's async engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import create_async_engine

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")

T = TypeVar("T")
Operation = Callable[..., T]  # a repository function: operation(*, session, **kwargs)


class DatabaseUrlError(ValueError):
    """The configured database URL cannot be used."""


def normalize_url(url: str) -> tuple[str, str]:
    """(dialect, SQLAlchemy URL with the driver this store uses) for a plain sqlite or postgresql URL."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise DatabaseUrlError(f"not a database URL: {url!r}") from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return backend, parsed.set(drivername="sqlite+pysqlite").render_as_string(hide_password=False)
    if backend == "postgresql":
        return backend, parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    raise DatabaseUrlError(f"unsupported database {backend!r}: use sqlite or postgresql")


class Database:
    """Owns the engines and runs repository functions in transactions."""

    def __init__(self, url: str, *, pool_size: int = 10, schema: str | None = None) -> None:
        self.dialect, self.url = normalize_url(url)
        self.schema = schema
        self._writer_thread: ThreadPoolExecutor | None = None
        self._reader_threads: ThreadPoolExecutor | None = None
        if self.is_sqlite:
            self.engine: Engine = create_engine(
                self.url, pool_size=pool_size, max_overflow=0, connect_args={"check_same_thread": False}
            )
            self._read_engine: Engine = self.engine.execution_options(sqlite_begin="BEGIN")
            _sqlite_pragmas(self.engine)
            self._writer_thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite-write")
            self._reader_threads = ThreadPoolExecutor(max(1, pool_size - 1), thread_name_prefix="sqlite-read")
        else:
            # A schema keeps several deployments (or test runs) apart in one database.
            connect_args = {"server_settings": {"search_path": schema}} if schema else {}
            self.async_engine = create_async_engine(
                self.url, pool_size=pool_size, max_overflow=pool_size, connect_args=connect_args
            )
            self.engine = self.async_engine.sync_engine
            # Claims and heartbeats are single statements whose loss in a database crash is harmless (the
            # lease runs out and the job runs again): autocommit, without waiting for the WAL flush.
            lossy_settings = {"synchronous_commit": "off", **({"search_path": schema} if schema else {})}
            self._lossy_engine = create_async_engine(
                self.url,
                pool_size=pool_size,
                max_overflow=pool_size,
                connect_args={"server_settings": lossy_settings},
                isolation_level="AUTOCOMMIT",
            )

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    async def write(self, operation: Operation[T], /, **kwargs: Any) -> T:
        """Run ``operation(session=…, **kwargs)`` in a write transaction: committed if it returns,
        rolled back if it raises."""
        if self._writer_thread is not None:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._writer_thread, _in_transaction, self.engine, operation, kwargs)
        async with self.async_engine.begin() as conn:
            return await conn.run_sync(lambda sync: operation(session=sync, **kwargs))

    async def write_lossy(self, operation: Operation[T], /, **kwargs: Any) -> T:
        """Run an operation made of single-statement writes whose loss in a database crash is harmless
        (claims, heartbeats: a lost claim only means the job runs again after its lease). On PostgreSQL
        each statement commits by itself without waiting for the disk: one round trip, no WAL flush."""
        if self._writer_thread is not None:
            return await self.write(operation, **kwargs)
        async with self._lossy_engine.connect() as conn:
            return await conn.run_sync(lambda sync: operation(session=sync, **kwargs))

    async def read(self, operation: Operation[T], /, **kwargs: Any) -> T:
        """Run ``operation(session=…, **kwargs)`` in a transaction that only reads."""
        if self._reader_threads is not None:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                self._reader_threads, _in_transaction, self._read_engine, operation, kwargs
            )
        async with self.async_engine.connect() as conn:
            return await conn.run_sync(lambda sync: operation(session=sync, **kwargs))

    async def dispose(self) -> None:
        if self.is_sqlite:
            for pool in (self._writer_thread, self._reader_threads):
                if pool is not None:
                    pool.shutdown(wait=True)
            self.engine.dispose()
        else:
            await self.async_engine.dispose()
            await self._lossy_engine.dispose()

    async def upgrade(self) -> None:
        """Apply pending migrations (under a file lock on SQLite, so processes starting together agree)."""
        if self.is_sqlite:
            database = make_url(self.url).database
            lock = Path(database).with_suffix(".migrate.lock") if database and database != ":memory:" else None
            await asyncio.to_thread(_upgrade_sqlite, self.engine, lock)
        else:
            async with self.async_engine.connect() as conn:
                await conn.run_sync(_run_upgrade)
                await conn.commit()


def _in_transaction(engine: Engine, operation: Callable[..., T], kwargs: dict[str, Any]) -> T:
    with engine.begin() as conn:
        return operation(session=conn, **kwargs)


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let the begin event below own the transaction start instead of the driver.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Writers take the write lock up front: a deferred BEGIN that later writes fails with
        # "database is locked" instead of waiting, whatever busy_timeout says.
        conn.exec_driver_sql(conn.get_execution_options().get("sqlite_begin", "BEGIN IMMEDIATE"))


def _upgrade_sqlite(engine: Engine, lock: Path | None) -> None:
    with _file_lock(lock), engine.begin() as conn:
        _run_upgrade(conn)


@contextlib.contextmanager
def _file_lock(path: Path | None) -> Iterator[None]:
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


def _run_upgrade(connection: Connection) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
