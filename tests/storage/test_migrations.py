"""Migrations: the schema they build is the models' schema, and upgrading keeps the data already there."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

from storage import jobs, reconcile, scopes
from storage.db import MIGRATIONS_DIR, Database
from storage.quota import record_entry
from storage.states import LedgerKind
from tests.conftest import StoreTarget

# The scope settings table as revision 0001 created it.
_SCOPES_0001 = sa.table(
    "scope_settings",
    sa.column("scope", sa.String),
    sa.column("paused", sa.Boolean),
    sa.column("pause_reason", sa.String),
    sa.column("daily_jobs", sa.Integer),
    sa.column("channels", sa.JSON),
    sa.column("extra", sa.JSON),
    sa.column("updated_at", sa.Float),
)


# The users table as revision 0001 created it (later revisions add columns today's queries read).
_USERS_0001 = sa.table(
    "users",
    *(
        sa.column(name, sa.String)
        for name in ("platform", "platform_user_id", "display_name", "tier", "ban_reason", "day")
    ),
    *(sa.column(name, sa.Boolean) for name in ("banned", "unlimited")),
    *(sa.column(name, sa.Integer) for name in ("id", "credits", "reserved", "running", "day_jobs")),
    *(sa.column(name, sa.Float) for name in ("last_vfinish", "created_at")),
)


def _user_0001(*, session: Connection) -> int:
    """A user with 5 welcome credits, written as revision 0001's code would."""
    values: dict[str, object] = {"platform": "telegram", "platform_user_id": "7", "display_name": ""}
    values |= {"tier": "free", "ban_reason": ""}
    values |= {"day": "", "banned": False, "unlimited": False, "credits": 5, "reserved": 0, "running": 0}
    values |= {"day_jobs": 0, "last_vfinish": 0.0, "created_at": 1000.0}
    user_id = session.execute(_USERS_0001.insert().values(**values).returning(_USERS_0001.c.id)).scalar_one()
    record_entry(session, user_id, None, LedgerKind.GRANT, 5, 1000.0, note="welcome")
    return int(user_id)


def _migrate(*, session: Connection, revision: str, down: bool = False) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = session
    (command.downgrade if down else command.upgrade)(config, revision)


def _revision(*, session: Connection) -> str | None:
    return MigrationContext.configure(session).get_current_revision()


def _scope_columns(*, session: Connection) -> set[str]:
    return {column["name"] for column in sa.inspect(session).get_columns("scope_settings")}


def _schema_drift(*, session: Connection) -> list[object]:
    context = MigrationContext.configure(session, opts={"compare_type": True})
    return list(compare_metadata(context, SQLModel.metadata))


async def test_migrated_schema_matches_the_models(db: Database) -> None:
    assert await db.read(_schema_drift) == []


async def test_upgrade_from_0001_keeps_scopes_users_and_jobs(store_target: StoreTarget) -> None:
    db = store_target.open()
    try:
        await db.write(_migrate, revision="0001")
        assert await db.read(_revision) == "0001"
        assert "extra" in await db.read(_scope_columns)
        user_id = await db.write(_user_0001)
        await db.write(
            jobs.submit,
            job=jobs.NewJob(id="before", user_id=user_id, params={"prompt": "p"}, cost=2),
            now=1000.0,
            daily_jobs_default=10,
        )
        rows = [
            {
                "scope": "global",
                "paused": True,
                "pause_reason": "maintenance",
                "daily_jobs": 3,
                "channels": [],
                "extra": {"note": "never read"},
                "updated_at": 999.0,
            },
            {
                "scope": "discord:guild:1",
                "paused": False,
                "pause_reason": "",
                "daily_jobs": None,
                "channels": ["10", "11"],
                "extra": {},
                "updated_at": 998.0,
            },
        ]
        await db.write(lambda session: session.execute(_SCOPES_0001.insert(), rows))

        await db.upgrade()

        assert await db.read(_revision) == "0007"
        assert "extra" not in await db.read(_scope_columns)
        assert await db.read(scopes.get_scope, scope="global") == scopes.Scope(
            name="global", paused=True, pause_reason="maintenance", daily_jobs=3, channels=(), updated_at=999.0
        )
        guild = await db.read(scopes.get_scope, scope="discord:guild:1")
        assert guild.channels == ("10", "11") and guild.daily_jobs is None and not guild.paused
        kept = await db.read(jobs.get, job_id="before")
        assert kept is not None and kept.cost == 2
        # The store works on the migrated schema: scopes change, jobs submit, the books balance.
        await db.write(scopes.update_scope, scope="discord:guild:1", now=1001.0, paused=True)
        assert (await db.read(scopes.get_scope, scope="discord:guild:1")).channels == ("10", "11")
        await db.write(
            jobs.submit,
            job=jobs.NewJob(id="after", user_id=user_id, params={"prompt": "p"}, cost=1),
            now=1001.0,
            daily_jobs_default=10,
        )
        assert await db.read(reconcile.find_drift) == []

        # And back: the column returns empty, the rows stay.
        await db.write(_migrate, revision="0001", down=True)
        assert "extra" in await db.read(_scope_columns)
        extras = await db.read(
            lambda session: dict(session.execute(sa.select(_SCOPES_0001.c.scope, _SCOPES_0001.c.extra)).all())
        )
        assert extras == {"global": {}, "discord:guild:1": {}}
    finally:
        await db.dispose()
