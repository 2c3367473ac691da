"""Shared fixtures: a migrated store on SQLite, and on PostgreSQL when a URL is given."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from storage.db import Database
from tests.s3_server import NoServer, S3Server, run_s3_server

POSTGRES_URL = os.environ.get("LIKENESS_TEST_POSTGRES_URL", "")
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if POSTGRES_URL:
        return
    skip = pytest.mark.skip(reason="LIKENESS_TEST_POSTGRES_URL is not set: PostgreSQL half not run")
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


def _asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


class StoreTarget:
    """Where a test's database lives: a SQLite file or a private PostgreSQL schema."""

    def __init__(self, kind: str, url: str, schema: str | None) -> None:
        self.kind = kind
        self.url = url
        self.schema = schema

    def open(self, **kw: object) -> Database:
        return Database(self.url, schema=self.schema, **kw)  # type: ignore[arg-type]

    def env(self) -> dict[str, str]:
        """Settings a child process needs to reach the same database."""
        env = {"LIKENESS_DATABASE_URL": self.url}
        if self.schema:
            env["LIKENESS_DATABASE_SCHEMA"] = self.schema
        return env


@pytest.fixture(params=BACKENDS)
async def store_target(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreTarget]:
    if request.param == "sqlite":
        yield StoreTarget("sqlite", f"sqlite:///{tmp_path / 'likeness.db'}", None)
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(_asyncpg_dsn(POSTGRES_URL))
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        yield StoreTarget("postgres", POSTGRES_URL, schema)
    finally:
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await conn.close()


@pytest.fixture
async def db(store_target: StoreTarget) -> AsyncIterator[Database]:
    database = store_target.open()
    await database.upgrade()
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A real S3-compatible server (SeaweedFS) for the whole session; skipped only when it cannot start."""
    try:
        with run_s3_server() as server:
            yield server
    except NoServer as exc:
        pytest.skip(f"no S3 server: {exc}")
