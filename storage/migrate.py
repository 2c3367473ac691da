"""Whether a database is at the newest schema, for processes that must not migrate it themselves."""

from __future__ import annotations

from typing import Any

from storage.db import MIGRATIONS_DIR, Database


def _current_and_head(*, session: Any) -> tuple[str | None, str | None]:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    current = MigrationContext.configure(session).get_current_revision()
    return current, head


async def pending(db: Database) -> bool:
    """True when migrations are waiting to be applied."""
    current, head = await db.read(_current_and_head)
    return current != head
