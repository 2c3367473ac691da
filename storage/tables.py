"""Core table handles for the hot paths, where statements skip the ORM's unit of work."""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table

from storage.models import (
    AuditEntry,
    BlobRef,
    Identity,
    Image,
    Job,
    JobEvent,
    LedgerEntry,
    ScopeSettings,
    User,
)

users = cast(Table, User.__table__)
identities = cast(Table, Identity.__table__)
jobs = cast(Table, Job.__table__)
job_events = cast(Table, JobEvent.__table__)
ledger = cast(Table, LedgerEntry.__table__)
images = cast(Table, Image.__table__)
blob_refs = cast(Table, BlobRef.__table__)
audit_log = cast(Table, AuditEntry.__table__)
scope_settings = cast(Table, ScopeSettings.__table__)
