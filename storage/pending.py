"""Costly jobs waiting for their user's confirmation: queued, and charged, only once they confirm.

The pending row has the id the job will get, so confirming twice (a double click, a repeated update)
submits once: the second finds the row gone and the job there. Its photos stay referenced meanwhile.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.engine import Connection

from storage import blob_refs, embeddings, jobs, scope_caps
from storage import tables as t
from storage.models import PendingJob
from storage.scopes import GLOBAL_SCOPE

_p = t.pending_jobs.c


def owner(job_id: str) -> str:
    """The blob reference owner of a pending job's photos."""
    return f"pending:{job_id}"


def put(*, session: Connection, job: jobs.NewJob, now: float, scope: str = GLOBAL_SCOPE) -> None:
    """Keep the job until its user confirms (again: the same id is kept once); ``scope`` is where its images
    count against a daily cap when it is queued."""
    fields = {**dataclasses.asdict(job), "scope": scope}
    session.execute(
        t.upsert_insert(session, t.pending_jobs)
        .values(id=job.id, user_id=job.user_id, cost=job.cost, job=fields, created_at=now)
        .on_conflict_do_nothing(index_elements=["id"])
    )
    for key in job.face_keys:
        blob_refs.add(session=session, blob_key=key, owner=owner(job.id))


def get(*, session: Connection, job_id: str) -> PendingJob | None:
    row = session.execute(select(t.pending_jobs).where(_p.id == job_id)).first()
    return None if row is None else PendingJob.model_validate(dict(row._mapping))


def _take(session: Connection, job_id: str, user_id: int) -> PendingJob | None:
    row = session.execute(
        delete(t.pending_jobs).where(_p.id == job_id, _p.user_id == user_id).returning(*t.pending_jobs.c)
    ).first()
    return None if row is None else PendingJob.model_validate(dict(row._mapping))


def confirm(
    *, session: Connection, job_id: str, user_id: int, reply_target: dict[str, Any], now: float, daily_jobs_default: int
) -> bool:
    """Submit the pending job (its quota reserved as any submit); False when there is none of this user's
    to confirm (confirmed already, declined, or not theirs). Raises as ``jobs.submit`` does."""
    pending = _take(session, job_id, user_id)
    if pending is None:
        return False
    fields = {**pending.job, "reply_target": reply_target}
    job = jobs.NewJob(**{name: fields[name] for name in (f.name for f in dataclasses.fields(jobs.NewJob))})
    submit_capped(
        session=session,
        job=job,
        now=now,
        daily_jobs_default=daily_jobs_default,
        scope=str(fields.get("scope") or GLOBAL_SCOPE),
    )
    blob_refs.release(session=session, owner=owner(job_id))  # the job holds its own references now
    return True


def submit_capped(
    *, session: Connection, job: jobs.NewJob, now: float, daily_jobs_default: int, scope: str = GLOBAL_SCOPE
) -> float:
    """``jobs.submit``, its images counted against ``scope``'s daily cap in the same transaction (raises
    ScopeCapReached, like the submit's own refusals, with nothing written)."""
    scope_caps.take(session=session, scope=scope, images=int(job.params.get("num_images") or 1), now=now)
    return jobs.submit(session=session, job=job, now=now, daily_jobs_default=daily_jobs_default)


def decline(*, session: Connection, job_id: str, user_id: int) -> list[str]:
    """Drop the pending job and its face embeddings; returns the photo keys nothing references any more (for
    the caller to delete)."""
    if _take(session, job_id, user_id) is None:
        return []
    embeddings.remove(session=session, owner=blob_refs.job_owner(job_id))
    return blob_refs.release(session=session, owner=owner(job_id))


def expire(*, session: Connection, before: float) -> list[str]:
    """Drop pending jobs nobody confirmed since ``before``, with their face embeddings; returns the photo keys
    freed."""
    ids = list(session.execute(select(_p.id).where(_p.created_at < before)).scalars())
    freed: list[str] = []
    for job_id in ids:
        session.execute(delete(t.pending_jobs).where(_p.id == job_id))
        embeddings.remove(session=session, owner=blob_refs.job_owner(job_id))
        freed.extend(blob_refs.release(session=session, owner=owner(job_id)))
    return freed
