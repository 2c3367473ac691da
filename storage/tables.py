"""Core table handles for the hot paths, where statements skip the ORM's unit of work."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, literal_column
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

import storage.models  # noqa: F401  (defines the tables on SQLModel.metadata)

_tables = SQLModel.metadata.tables
users: Table = _tables["users"]
identities: Table = _tables["identities"]
jobs: Table = _tables["jobs"]
job_events: Table = _tables["job_events"]
ledger: Table = _tables["ledger"]
images: Table = _tables["images"]
blob_refs: Table = _tables["blob_refs"]
audit_log: Table = _tables["audit_log"]
scope_settings: Table = _tables["scope_settings"]
workers: Table = _tables["workers"]
face_embeddings: Table = _tables["face_embeddings"]
scope_days: Table = _tables["scope_days"]
purchases: Table = _tables["purchases"]
budget_holds: Table = _tables["budget_holds"]
budget_alerts: Table = _tables["budget_alerts"]
pending_jobs: Table = _tables["pending_jobs"]

# Spelled as literals so the planners can use the partial indexes (a bound parameter hides the match).
QUEUED = jobs.c.state == literal_column("'queued'")
DELIVERY_PENDING = jobs.c.delivery_state == literal_column("'pending'")


def upsert_insert(session: Connection, table: Table) -> Any:
    """An INSERT of the session's dialect, which offers ON CONFLICT (the two spell it alike)."""
    return (pg_insert if session.dialect.name == "postgresql" else sqlite_insert)(table)
