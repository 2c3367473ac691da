"""Core table handles for the hot paths, where statements skip the ORM's unit of work."""

from __future__ import annotations

from sqlalchemy import Table
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
