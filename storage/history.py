"""A user's past jobs: paging through them, finding the latest, and forgetting everything on request."""

from __future__ import annotations

from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import Connection

from storage import blob_refs
from storage import tables as t
from storage.identities import remove as remove_identities
from storage.jobs import to_job
from storage.models import Job
from storage.states import TERMINAL_STATES, UNFINISHED_STATES

_j, _u = t.jobs.c, t.users.c


def page(*, session: Connection, user_id: int, offset: int, limit: int) -> tuple[list[Job], int]:
    """Newest first, with the total count for paging."""
    rows = session.execute(
        select(t.jobs).where(_j.user_id == user_id).order_by(_j.created_at.desc(), _j.id).offset(offset).limit(limit)
    )
    total = session.execute(select(func.count()).select_from(t.jobs).where(_j.user_id == user_id)).scalar_one()
    return [to_job(row) for row in rows], int(total)


def latest_unfinished(*, session: Connection, user_id: int) -> Job | None:
    row = session.execute(
        select(t.jobs)
        .where(_j.user_id == user_id, _j.state.in_([s.value for s in UNFINISHED_STATES]))
        .order_by(_j.created_at.desc())
        .limit(1)
    ).first()
    return None if row is None else to_job(row)


def forget(*, session: Connection, user_id: int) -> list[str] | None:
    """Delete the user's identities, finished jobs, their images and events, and their display name;
    returns the blobs now unused.

    None (and nothing deleted) while a job of theirs is still queued or running. Credit ledger entries
    stay: they are the operator's accounts, and hold no photos or prompts.
    """
    # The user row first: a submit reserves on it, so none can slip in between the check below and the
    # deletes (PostgreSQL; SQLite's writers run one at a time anyway).
    session.execute(select(_u.id).where(_u.id == user_id).with_for_update())
    if latest_unfinished(session=session, user_id=user_id) is not None:
        return None
    _count, freed = remove_identities(session=session, user_id=user_id)
    # Only finished jobs: an unfinished one holds a reservation that only its own ending may release.
    job_ids = list(
        session.execute(
            select(_j.id).where(_j.user_id == user_id, _j.state.in_([s.value for s in TERMINAL_STATES]))
        ).scalars()
    )
    for job_id in job_ids:
        freed += blob_refs.release(session=session, owner=blob_refs.job_owner(job_id))
    if job_ids:
        session.execute(delete(t.images).where(t.images.c.job_id.in_(job_ids)))
        session.execute(delete(t.job_events).where(t.job_events.c.job_id.in_(job_ids)))
        session.execute(delete(t.jobs).where(_j.id.in_(job_ids)))
    session.execute(update(t.users).where(_u.id == user_id).values(display_name=""))
    return sorted(set(freed))
