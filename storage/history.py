"""A user's past jobs: paging through them, finding the latest, and forgetting everything on request."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import Connection

from storage import blob_refs, embeddings
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


@dataclass(frozen=True)
class Forgotten:
    """What ``forget`` deleted, for the receipt the user gets, and the blobs to delete after the commit."""

    freed: list[str] = field(default_factory=list)  # blobs nothing references any more
    identities: int = 0  # saved faces
    photos: int = 0  # distinct face photos of those faces and of the jobs
    embeddings: int = 0  # face embeddings of both
    results: int = 0  # rendered images
    history: int = 0  # jobs, with their event logs


def forget(*, session: Connection, user_id: int) -> Forgotten | None:
    """Delete the user's identities, finished jobs, their images, embeddings and events, and their display
    name; returns what was deleted and the blobs now unused.

    None (and nothing deleted) while a job of theirs is still queued or running. Credit ledger entries
    stay: they are the operator's accounts, and hold no photos or prompts; so does the time the user agreed
    to the privacy notice.
    """
    # The user row first: a submit reserves on it, so none can slip in between the check below and the
    # deletes (PostgreSQL; SQLite's writers run one at a time anyway).
    session.execute(select(_u.id).where(_u.id == user_id).with_for_update())
    if latest_unfinished(session=session, user_id=user_id) is not None:
        return None
    faces = session.execute(
        select(t.identities.c.id, t.identities.c.photo_keys).where(t.identities.c.user_id == user_id)
    )
    photos: set[str] = set()
    owners: list[str] = []
    for identity_id, keys in faces:
        photos.update(str(key) for key in keys)
        owners.append(blob_refs.identity_owner(identity_id))
    # Only finished jobs: an unfinished one holds a reservation that only its own ending may release.
    finished = session.execute(
        select(_j.id, _j.face_keys).where(_j.user_id == user_id, _j.state.in_([s.value for s in TERMINAL_STATES]))
    ).all()
    job_ids = [str(job_id) for job_id, _keys in finished]
    for _job_id, keys in finished:
        photos.update(str(key) for key in keys)
    owners += [blob_refs.job_owner(job_id) for job_id in job_ids]
    embedded = embeddings.count(session=session, owners=owners)
    identity_count, freed = remove_identities(session=session, user_id=user_id)
    for job_id in job_ids:
        freed += blob_refs.release(session=session, owner=blob_refs.job_owner(job_id))
    embeddings.remove_owners(session=session, owners=owners)
    results = 0
    if job_ids:
        results = int(
            session.execute(
                select(func.count()).select_from(t.images).where(t.images.c.job_id.in_(job_ids))
            ).scalar_one()
        )
        session.execute(delete(t.images).where(t.images.c.job_id.in_(job_ids)))
        session.execute(delete(t.job_events).where(t.job_events.c.job_id.in_(job_ids)))
        session.execute(delete(t.jobs).where(_j.id.in_(job_ids)))
    session.execute(update(t.users).where(_u.id == user_id).values(display_name=""))
    return Forgotten(
        freed=sorted(set(freed)),
        identities=identity_count,
        photos=len(photos),
        embeddings=embedded,
        results=results,
        history=len(job_ids),
    )
