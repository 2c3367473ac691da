"""Retention: finished jobs past their keep period give up their photos and outputs; their rows stay."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from storage import blob_refs, embeddings
from storage import tables as t
from storage.states import TERMINAL_STATES


@dataclass(frozen=True)
class ExpiredBatch:
    job_ids: list[str] = field(default_factory=list)  # jobs this call marked expired
    orphaned_keys: list[str] = field(default_factory=list)  # blobs nothing references any more
    more: bool = False  # the batch was full: more jobs may be due


def expire_finished(*, session: Connection, before: float, now: float, limit: int = 200) -> ExpiredBatch:
    """Mark up to ``limit`` jobs that finished before ``before`` as expired and drop their blob references.

    Only terminal jobs qualify, so the face photos (and embeddings) of queued or running jobs stay. Blobs that another
    owner still references (a saved identity, another job) are kept. The caller deletes
    ``orphaned_keys`` from the blob store after this transaction commits (checking them again with
    ``blob_refs.unreferenced`` right before).
    """
    j = t.jobs.c
    due = list(
        session.execute(
            select(j.id)
            .where(
                j.expired.is_(False),
                j.state.in_([str(state) for state in TERMINAL_STATES]),
                j.finished_at < before,
            )
            .order_by(j.finished_at, j.id)
            .limit(limit)
        ).scalars()
    )
    if not due:
        return ExpiredBatch()
    # Conditional, so a concurrent sweeper on another host releases each job's references only once.
    marked = list(
        session.execute(
            update(t.jobs)
            .where(j.id.in_(due), j.expired.is_(False))
            .values(expired=True, updated_at=now)
            .returning(j.id)
        ).scalars()
    )
    orphaned: list[str] = []
    for job_id in sorted(marked):
        orphaned.extend(blob_refs.release(session=session, owner=blob_refs.job_owner(job_id)))
    # A job's face embeddings are biometric data like its photos: they go with them.
    embeddings.remove_owners(session=session, owners=[blob_refs.job_owner(job_id) for job_id in marked])
    return ExpiredBatch(job_ids=sorted(marked), orphaned_keys=orphaned, more=len(due) >= limit)
